"""Train the tiny-shapes CLIP: a small transformers.CLIPModel on freshly drawn shapes, on one CPU thread.

    python scripts/tiny_shapes/train.py --out npclip/data/tiny-shapes

writes the whole checkpoint directory (config, float16 weights, tokenizer with the real 49,408-token
CLIP vocabulary, image-processor config, example images, model card) and evaluates it.
torch and transformers are needed here only; npclip runs the result without them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPTokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import card  # noqa: E402
import data  # noqa: E402
import evaluate  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMAGE_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)  # OpenAI CLIP
IMAGE_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


# --- tokenizer ----------------------------------------------------------------------------------

def clip_vocabulary():
    """The vocabulary (49,408 tokens in id order) and merges exactly as openai/CLIP builds them,
    from the merge list npclip ships (npclip.tokenizer.openai_vocab_and_merges)."""
    from npclip.tokenizer import openai_vocab_and_merges

    vocab, merges = openai_vocab_and_merges()
    return sorted(vocab, key=vocab.get), merges


def write_tokenizer(directory):
    """Write vocab.json, merges.txt, tokenizer_config.json and special_tokens_map.json -> CLIPTokenizer.

    tokenizer.json (3.6 MB) is left out: transformers rebuilds it from vocab.json and merges.txt.
    """
    vocab, merges = clip_vocabulary()
    with open(os.path.join(directory, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({t: i for i, t in enumerate(vocab)}, f, ensure_ascii=False, separators=(",", ":"))
    with open(os.path.join(directory, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    tokenizer = CLIPTokenizer(vocab=os.path.join(directory, "vocab.json"),
                              merges=os.path.join(directory, "merges.txt"), model_max_length=77)
    tokenizer.save_pretrained(directory)
    os.remove(os.path.join(directory, "tokenizer.json"))
    specials = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
                "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
    with open(os.path.join(directory, "special_tokens_map.json"), "w") as f:
        json.dump(specials, f, indent=2)
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    return tokenizer


# --- model and data -----------------------------------------------------------------------------

def make_config(args) -> CLIPConfig:
    """The tiny CLIP: both towers small; the text width is what fits the 49,408-row embedding in 8 MB."""
    text = dict(vocab_size=49408, hidden_size=args.text_width, intermediate_size=4 * args.text_width,
                num_hidden_layers=args.text_layers, num_attention_heads=args.text_heads,
                max_position_embeddings=77, hidden_act="quick_gelu",
                bos_token_id=49406, eos_token_id=49407, pad_token_id=1)
    vision = dict(image_size=data.SIZE, patch_size=args.patch_size, hidden_size=args.vision_width,
                  intermediate_size=4 * args.vision_width, num_hidden_layers=args.vision_layers,
                  num_attention_heads=args.vision_heads, num_channels=3, hidden_act="quick_gelu")
    return CLIPConfig(text_config={**text, "projection_dim": args.projection_dim},
                      vision_config={**vision, "projection_dim": args.projection_dim},
                      projection_dim=args.projection_dim)  # sub-configs agree, for CLIPTextModelWithProjection


def init_like_openai(model):
    """Re-initialise the vision position embedding as openai/CLIP does: N(0, width**-0.5).

    transformers draws it from N(0, 0.02) (4.4 times smaller at width 128); with openai's scale the
    from-scratch ViT learned shapes somewhat faster in short probes.
    """
    pe = model.vision_model.embeddings.position_embedding.weight  # [N, D]
    with torch.no_grad():
        pe.normal_(0.0, pe.shape[1] ** -0.5)


def pixel_values(images):
    """What CLIPImageProcessorPil does to a 64x64 image (resize and crop are identities), in NumPy.

    images: list of B PIL images -> [B, 3, S, S] float32
    """
    x = np.stack([np.asarray(im, dtype=np.float32) for im in images]) / 255.0  # [B, S, S, 3]
    x = (x - IMAGE_MEAN) / IMAGE_STD  # [B, S, S, 3]
    return torch.from_numpy(x.transpose(0, 3, 1, 2).copy())  # [B, 3, S, S]


def training_batch(seed, step, batch_size, tokenizer):
    """One freshly drawn batch of twin pairs -> (text inputs, pixel values [B, 3, S, S], matches [B, B] bool)."""
    samples = data.batch([seed, step], batch_size, twins=True)
    text = tokenizer([s.caption for s in samples], padding=True, return_tensors="pt")
    return text, pixel_values([s.image for s in samples]), torch.from_numpy(data.matches(samples))


def contrastive_loss(logits_per_text, matches):
    """CLIP's symmetric cross-entropy, with every true caption-image pair a positive.

    openai/CLIP takes pair i as the only positive of row i; here a caption that is also true of
    another image in the batch ("a red circle" of two red-circle images) shares its target among them.
    logits_per_text: [B, B], matches: [B, B] bool (caption, image) -> scalar
    """
    m = matches.float()  # [B, B]
    text_loss = F.cross_entropy(logits_per_text, m / m.sum(1, keepdim=True))  # each caption -> its images
    image_loss = F.cross_entropy(logits_per_text.T, m.T / m.T.sum(1, keepdim=True))  # each image -> its captions
    return (text_loss + image_loss) / 2


def optimizer_and_schedule(model, args):
    """AdamW (no decay on embeddings, norms, biases, logit scale) with warmup then cosine to zero."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.98), eps=1e-6)

    def factor(step):
        if step < args.warmup:
            return (step + 1) / args.warmup
        return 0.5 * (1 + math.cos(math.pi * (step - args.warmup) / max(1, args.steps - args.warmup)))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def quick_eval(model, tokenizer, samples):
    """Zero-shot accuracies on a few held-out samples, for the training log -> "task acc ..." string."""
    model.eval()
    processor = CLIPImageProcessorPil(size={"shortest_edge": data.SIZE}, crop_size={"height": data.SIZE, "width": data.SIZE})
    acc, _ = evaluate.accuracies(model, tokenizer, processor, samples)
    model.train()
    return "  ".join(f"{k} {100 * v:.0f}%" for k, v in acc.items())


def train(model, tokenizer, args):
    """The training loop on fresh batches -> wall seconds spent (without the progress evaluations)."""
    opt, schedule = optimizer_and_schedule(model, args)
    progress = data.batch([args.seed, evaluate.EVAL_SEED_STEP + 2], 300)  # held out, for the log only
    model.train()
    start, eval_seconds = time.time(), 0.0
    for step in range(args.steps):
        text, pixels, matches = training_batch(args.seed, step, args.batch_size, tokenizer)
        out = model(input_ids=text.input_ids, attention_mask=text.attention_mask, pixel_values=pixels)
        loss = contrastive_loss(out.logits_per_text, matches)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        schedule.step()
        if step % args.log_every == 0 or step == args.steps - 1:
            print(f"step {step:5d}  loss {loss.item():.4f}  lr {schedule.get_last_lr()[0]:.2e}  "
                  f"scale {model.logit_scale.exp().item():6.2f}  {time.time() - start - eval_seconds:6.0f}s", flush=True)
        if (step + 1) % args.eval_every == 0 and step + 1 < args.steps:
            t = time.time()
            print(f"step {step + 1:5d}  held-out {quick_eval(model, tokenizer, progress)}", flush=True)
            eval_seconds += time.time() - t
    return time.time() - start - eval_seconds


# --- saving -------------------------------------------------------------------------------------

def save_checkpoint(model, out):
    """config.json, float16 model.safetensors, tokenizer files and preprocessor_config.json."""
    os.makedirs(out, exist_ok=True)
    half = {k: v.half() for k, v in model.state_dict().items()}  # float16 on disk, for size
    model.save_pretrained(out, state_dict=half)  # config.json keeps "dtype": "float32": loads compute in float32
    os.chmod(os.path.join(out, "model.safetensors"), 0o644)  # saved owner-only
    write_tokenizer(out)
    CLIPImageProcessorPil(size={"shortest_edge": data.SIZE},
                          crop_size={"height": data.SIZE, "width": data.SIZE}).save_pretrained(out)


def save_examples(out, seed):
    """Draw the example images into out/examples (generator seed [seed, 10**6 + 1]) -> {file name: caption}."""
    os.makedirs(os.path.join(out, "examples"), exist_ok=True)
    rng = np.random.default_rng([seed, evaluate.EVAL_SEED_STEP + 1])
    captions = {}
    for name, scene in data.EXAMPLES.items():
        data.sample(rng, *scene).image.save(os.path.join(out, "examples", name), optimize=True)
        captions[name] = data.describe(*scene)
    return captions


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=os.path.join(REPO, "npclip", "data", "tiny-shapes"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--patch-size", type=int, default=8)
    p.add_argument("--vision-width", type=int, default=128)
    p.add_argument("--vision-layers", type=int, default=4)
    p.add_argument("--vision-heads", type=int, default=4)
    p.add_argument("--text-width", type=int, default=32)
    p.add_argument("--text-layers", type=int, default=3)
    p.add_argument("--text-heads", type=int, default=4)
    p.add_argument("--projection-dim", type=int, default=64)
    p.add_argument("--eval-images", type=int, default=1000)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--eval-every", type=int, default=250, help="steps between held-out progress checks")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.out, exist_ok=True)
    tokenizer = write_tokenizer(args.out)
    model = CLIPModel(make_config(args))
    init_like_openai(model)
    print(f"parameters: {sum(p.numel() for p in model.parameters()):,}", flush=True)
    seconds = train(model, tokenizer, args)
    save_checkpoint(model, args.out)
    captions = save_examples(args.out, args.seed)
    samples = data.batch([args.seed, evaluate.EVAL_SEED_STEP], args.eval_images)
    results = evaluate.evaluate_dir(args.out, samples)
    results["n_params"] = sum(p.numel() for p in model.parameters())
    evaluate.report(results)
    card.write_model_card(args, argv, seconds, results, captions, model.config)
    print(f"trained in {seconds / 60:.1f} min; wrote {args.out}")


if __name__ == "__main__":
    main()
