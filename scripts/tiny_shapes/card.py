"""Write the tiny-shapes model card (README.md of the checkpoint) from the training run's numbers."""

from __future__ import annotations

import os
import platform
import shlex
import sys

import torch
import transformers

import data

CARD = """\
# tiny-shapes: a {n_params_m:.1f}M-parameter CLIP that knows coloured shapes

A tiny [CLIP](https://github.com/openai/CLIP) (Hugging Face `CLIPModel` layout) trained from scratch
on procedurally drawn images of coloured shapes, so that npclip's examples, notebooks and tests can
show meaningful zero-shot answers with no network and no large download.

**Intended use: teaching and offline demos only.** It has never seen a photograph; on real images its
answers mean nothing.

## What it knows

Images: {size}x{size} RGB, one to three upright shapes of one kind and one colour, grouped in one
region of a light, lightly noisy background (see `examples/`). Rotated shapes, dark backgrounds,
mixed shapes or colours in one image, and counts above three were never shown to it.

| attribute | values |
| --- | --- |
| colour | {colours} |
| shape | {shapes} |
| count | one (or "a"), two, three |
| position | {positions} |

Ask with the prompt template `"a photo of a {{}}."`, e.g. `"a photo of a red circle."`,
`"a photo of a blue shape."` (colour only), `"a photo of a star."` (shape only), or
`"a photo of two shapes."` (count). Training captions look like "a photo of two red circles",
"three blue squares on the left", "at the top, a yellow triangle." or "there is one green shape".

## Use

```python
import torch
from PIL import Image
from transformers import CLIPModel, CLIPProcessor

path = "npclip/data/tiny-shapes"
model, processor = CLIPModel.from_pretrained(path), CLIPProcessor.from_pretrained(path)
labels = ["red circle", "blue square", "green triangle", "yellow star", "purple cross"]
inputs = processor(text=[f"a photo of a {{label}}." for label in labels],
                   images=Image.open(f"{{path}}/examples/red_circle.png"), return_tensors="pt", padding=True)
with torch.no_grad():
    probs = model(**inputs).logits_per_image.softmax(dim=1)  # [1, 5]
print(labels[probs.argmax()])  # red circle
```

npclip loads the same directory with no torch: `npclip.CLIPModel.from_pretrained("tiny-shapes")`.

## Held-out zero-shot accuracy

{n_images} fresh images (generator seed `[{seed}, 1000000]`, never used in training), each classified
by the highest cosine similarity among all the labels of the task, prompt `"a photo of a {{}}."`
(for counts `"a photo of one shape."`, `"a photo of two shapes."`, ...):

| task | labels | accuracy |
| --- | --- | --- |
{accuracy_rows}

Commonest mistakes of the shape task: {mistakes}.
Reproduce with `python scripts/tiny_shapes/evaluate.py --dir npclip/data/tiny-shapes`.

## Example images

Drawn by the same generator (seed `[{seed}, 1000001]`), each classified through `CLIPProcessor`
among the {n_example_labels} example labels ({example_labels}), and among all 30 colour+shape labels:

| file | true caption | among the example labels | among all 30 labels |
| --- | --- | --- | --- |
{example_rows}

## Model

| | vision | text |
| --- | --- | --- |
| layers | {v.num_hidden_layers} | {t.num_hidden_layers} |
| width / heads / MLP | {v.hidden_size} / {v.num_attention_heads} / {v.intermediate_size} | {t.hidden_size} / {t.num_attention_heads} / {t.intermediate_size} |
| input | {v.image_size}x{v.image_size} image, {v.patch_size}x{v.patch_size} patches ({n_patches} + class token) | real CLIP BPE, 49,408 tokens, 77 positions |
| activation | {v.hidden_act} | {t.hidden_act} |

Projection dimension {projection_dim}; {n_params:,} parameters, {n_embed:,} of them the text token
embedding (49,408 x {t.hidden_size}; only the few dozen tokens of the captions are ever trained, the other
rows keep their random initialisation). `bos_token_id` 49406, `eos_token_id` 49407, `pad_token_id` 1
as in OpenAI's configs; the tokenizer pads with `<|endoftext|>`.

**Weights are stored in float16** (`model.safetensors`) so that the whole directory stays under 8 MB;
`config.json` says `"dtype": "float32"`, so transformers' default `from_pretrained` (and npclip) compute
in float32. The accuracies above are those of this float16 file, reloaded.
`tokenizer.json` (3.6 MB) is left out: transformers rebuilds it from `vocab.json` and `merges.txt`,
which are exactly openai/CLIP's vocabulary (built from `bpe_simple_vocab_16e6.txt.gz`).
`preprocessor_config.json` is `CLIPImageProcessorPil` with shortest edge = crop = {size}, bicubic,
OpenAI mean and std.

## Training

* Data: a fresh batch of {batch_size} drawn images and captions every step (generator seed
  `[{seed}, step]`), so no image is seen twice; `scripts/tiny_shapes/data.py`. Each batch is drawn as
  pairs of scenes that differ in one attribute (mostly the shape), so that every caption meets a
  hard negative; each scene on its own is still uniformly drawn.
* Loss: CLIP's symmetric contrastive cross-entropy, except that a caption true of several images in
  the batch ("a red circle" for two red-circle images) spreads its target evenly over them.
* Initialisation: transformers' `CLIPModel` defaults, except the vision position embedding, drawn
  from N(0, width^-0.5) as openai/CLIP does (transformers uses N(0, 0.02)).
* AdamW (betas 0.9, 0.98, eps 1e-6, weight decay {weight_decay} on weight matrices, not on embeddings, norms or biases), peak learning rate
  {lr}, {warmup} warm-up steps then cosine to zero, gradient-norm clip 1.0, {steps} steps.
* Seed {seed} (torch and the generator); one CPU thread (`torch.set_num_threads(1)`),
  {minutes:.1f} minutes of training wall time (not counting the progress checks) on {cpu}; torch {torch_version}, transformers
  {transformers_version}, Python {python_version}.

Regenerate this whole directory (weights, tokenizer files, examples and this card) with

```bash
{command}
```

## Licence

MIT, like npclip; the BPE vocabulary is OpenAI's, released with CLIP under the MIT licence.
"""


def cpu_name():
    """The CPU model from /proc/cpuinfo, else the machine type."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def command_line(argv):
    """The training command as typed from the repository root."""
    args = sys.argv[1:] if argv is None else list(argv)
    return "python scripts/tiny_shapes/train.py " + (shlex.join(args) or "--out npclip/data/tiny-shapes")


def write_model_card(args, argv, seconds, results, captions, model_config):
    """Fill CARD with the run's settings and numbers and write <out>/README.md."""
    acc = results["accuracy"]
    accuracy_rows = "\n".join(f"| {task.replace('_', ' + ')} | {len(data.class_names(task))} | {100 * a:.1f}% |"
                              for task, a in acc.items())
    example_rows = "\n".join(f"| `examples/{name}` | {captions[name]} | {pred} ({p:.2f}) | {pred_all} ({p_all:.2f}) |"
                             for (name, _, pred, p), (_, _, pred_all, p_all)
                             in zip(results["examples"], results["examples_all"]))
    mistakes = "; ".join(f"{100 * f:.0f}% of {data.PLURAL[t]} answered {p}" for t, p, f in results["mistakes"])
    labels = sorted({f"{c} {s}" for _, c, s, _ in data.EXAMPLES.values()})
    v, t = model_config.vision_config, model_config.text_config
    text = CARD.format(
        size=data.SIZE, colours=", ".join(data.COLOURS), shapes=", ".join(data.SHAPES),
        positions=", ".join(f"{k} ({v[1][0]})" for k, v in data.POSITIONS.items()),
        n_images=results["n_images"], seed=args.seed, accuracy_rows=accuracy_rows, mistakes=mistakes,
        n_example_labels=len(labels), example_labels=", ".join(labels), example_rows=example_rows,
        v=v, t=t, n_patches=(v.image_size // v.patch_size) ** 2, projection_dim=model_config.projection_dim,
        n_params=results["n_params"], n_params_m=results["n_params"] / 1e6, n_embed=t.vocab_size * t.hidden_size,
        batch_size=args.batch_size, weight_decay=args.weight_decay, lr=args.lr, warmup=args.warmup,
        steps=args.steps, minutes=seconds / 60, cpu=cpu_name(),
        torch_version=torch.__version__, transformers_version=transformers.__version__,
        python_version=platform.python_version(), command=command_line(argv))
    with open(os.path.join(args.out, "README.md"), "w") as f:
        f.write(text)
