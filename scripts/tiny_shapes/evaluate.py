"""Check the tiny-shapes checkpoint with transformers: it reloads, and its zero-shot answers are right.

    python scripts/tiny_shapes/evaluate.py --dir npclip/data/tiny-shapes

Reloads the directory with CLIPModel, CLIPProcessor, CLIPTokenizer and CLIPImageProcessorPil, prints
held-out zero-shot accuracies (fresh images, prompt "a photo of a {}.") and classifies each example
image among the example labels. Exits non-zero if an example is misclassified.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch
from PIL import Image
from transformers import CLIPImageProcessorPil, CLIPModel, CLIPProcessor, CLIPTokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import data  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_DIR = os.path.join(REPO, "npclip", "data", "tiny-shapes")
EVAL_SEED_STEP = 10**6  # held-out images: generator seed [seed, 10**6]; training steps stay below it
TASKS = ["colour_shape", "colour", "shape", "count"]


def load(directory):
    """The checkpoint through transformers' public classes -> (model in float32, tokenizer, image processor)."""
    model = CLIPModel.from_pretrained(directory, dtype=torch.float32).eval()
    tokenizer = CLIPTokenizer.from_pretrained(directory)
    image_processor = CLIPImageProcessorPil.from_pretrained(directory)
    return model, tokenizer, image_processor


@torch.no_grad()
def text_features(model, tokenizer, prompts):
    """Unit-norm text embeddings: C prompts -> [C, E]."""
    t = tokenizer(prompts, padding=True, return_tensors="pt")
    f = model.get_text_features(input_ids=t.input_ids, attention_mask=t.attention_mask)
    f = f if torch.is_tensor(f) else f.pooler_output
    return f / f.norm(dim=-1, keepdim=True)


@torch.no_grad()
def image_features(model, image_processor, images, chunk=250):
    """Unit-norm image embeddings: B PIL images -> [B, E]."""
    out = []
    for i in range(0, len(images), chunk):
        px = image_processor(images=images[i:i + chunk], return_tensors="pt").pixel_values  # [b, 3, S, S]
        f = model.get_image_features(pixel_values=px)
        out.append(f if torch.is_tensor(f) else f.pooler_output)
    f = torch.cat(out)
    return f / f.norm(dim=-1, keepdim=True)


def accuracies(model, tokenizer, image_processor, samples):
    """Zero-shot accuracy of each task on the samples, and the commonest shape mistakes.

    -> ({task: fraction correct}, [(true shape, predicted shape, fraction of that shape's images)])
    """
    images = image_features(model, image_processor, [s.image for s in samples])  # [B, E]
    result, predictions = {}, {}
    for task in TASKS:
        predictions[task] = (images @ text_features(model, tokenizer, data.prompts(task)).T).argmax(1).numpy()  # [B]
        truth = np.array([data.true_label(s, task) for s in samples])
        result[task] = float((predictions[task] == truth).mean())
    return result, shape_mistakes(samples, predictions["shape"])


def shape_mistakes(samples, predicted, top=3):
    """The commonest wrong answers of the shape task -> [(true, predicted, fraction of true's images)]."""
    names = data.class_names("shape")
    pairs = {}
    for s, p in zip(samples, predicted):
        if names[p] != s.shape:
            pairs[(s.shape, names[p])] = pairs.get((s.shape, names[p]), 0) + 1
    totals = {n: sum(s.shape == n for s in samples) for n in names}
    worst = sorted(pairs.items(), key=lambda kv: -kv[1])[:top]
    return [(t, p, n / totals[t]) for (t, p), n in worst]


@torch.no_grad()
def classify_examples(directory, labels):
    """Each example image against the given colour+shape labels, through CLIPProcessor.

    -> list of (file name, true label, predicted label, probability of the prediction)
    """
    model = CLIPModel.from_pretrained(directory, dtype=torch.float32).eval()
    processor = CLIPProcessor.from_pretrained(directory)
    names = list(data.EXAMPLES)
    images = [Image.open(os.path.join(directory, "examples", n)).convert("RGB") for n in names]
    inputs = processor(text=[data.TEMPLATE.format(l) for l in labels], images=images,
                       return_tensors="pt", padding=True)
    probs = model(**inputs).logits_per_image.softmax(dim=1)  # [images, labels]
    rows = []
    for name, p in zip(names, probs):
        _, colour, shape, _ = data.EXAMPLES[name]
        rows.append((name, f"{colour} {shape}", labels[int(p.argmax())], float(p.max())))
    return rows


def evaluate_dir(directory, samples):
    """Held-out accuracies and the example checks of a saved checkpoint -> dict.

    examples: among the example images' own labels (must all be right); examples_all: among all 30.
    """
    model, tokenizer, image_processor = load(directory)
    accuracy, mistakes = accuracies(model, tokenizer, image_processor, samples)
    own = sorted({f"{colour} {shape}" for _, colour, shape, _ in data.EXAMPLES.values()})
    return {"accuracy": accuracy, "mistakes": mistakes, "n_images": len(samples),
            "examples": classify_examples(directory, own),
            "examples_all": classify_examples(directory, data.class_names("colour_shape"))}


def report(results):
    """Print the results; -> True when every example gets its label among the example labels."""
    print(f"held-out zero-shot accuracy on {results['n_images']} fresh images:")
    for task, acc in results["accuracy"].items():
        print(f"  {task:13s} {100 * acc:5.1f}%  ({len(data.class_names(task))} labels)")
    print("commonest shape mistakes:", ", ".join(f"{t} -> {p} ({100 * f:.0f}% of {data.PLURAL[t]})" for t, p, f in results["mistakes"]))
    ok = True
    for key, title in [("examples", "the example labels"), ("examples_all", "all 30 colour+shape labels")]:
        print(f"example images among {title}:")
        for name, truth, predicted, p in results[key]:
            ok &= key != "examples" or truth == predicted
            print(f"  {name:28s} true {truth:16s} predicted {predicted:16s} p={p:.2f} {'ok' if truth == predicted else 'WRONG'}")
    return ok


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dir", default=DEFAULT_DIR)
    p.add_argument("--seed", type=int, default=0, help="the training seed; held-out images use [seed, 10**6]")
    p.add_argument("--images", type=int, default=1000)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    results = evaluate_dir(args.dir, data.batch([args.seed, EVAL_SEED_STEP], args.images))
    sys.exit(0 if report(results) else 1)


if __name__ == "__main__":
    main()
