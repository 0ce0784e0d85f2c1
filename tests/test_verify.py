"""npclip.verify: named stages, golden files, the stage-by-stage report, and every kind of candidate.

A verifier is only as good as the mistakes it catches, so most tests here break a candidate on
purpose (a layer-norm epsilon, the activation, the pooled position, float16 round-off, one edited
number) and check that the report names the exact stage where the difference starts.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import npclip.text
from checkpoints import TINY_TEXT, TINY_VISION, load_reference, make_checkpoint
from conftest import DATA, reference
from parity import pixel_inputs, text_inputs
from npclip import CLIPModel
from npclip import verify as V

torch = reference("torch")
transformers = reference("transformers")

PHOTOS = [os.path.join(DATA, "chelsea.png"), os.path.join(DATA, "astronaut.png")]
LAYERS = TINY_TEXT["num_hidden_layers"]


def layer_stages(tower, n=LAYERS):
    return [f"{tower}.encoder.layers.{i}" + (f".{s}" if s else "") for i in range(n) for s in V.LAYER_STAGES]


VISION = ["vision_model.embeddings", "vision_model.pre_layrnorm", *layer_stages("vision_model"),
          "vision_model.post_layernorm"]
TEXT = ["text_model.embeddings", *layer_stages("text_model"), "text_model.final_layer_norm", "text_model.pooler_output"]
EXPECTED = {  # npclip's stages per class, in the order the data flows
    "CLIPModel": VISION + TEXT + ["visual_projection", "text_projection", "logits_per_image", "logits_per_text"],
    "CLIPTextModel": TEXT,
    "CLIPTextModelWithProjection": TEXT + ["text_projection"],
    "CLIPVisionModel": VISION,
    "CLIPVisionModelWithProjection": VISION + ["visual_projection"],
    "CLIPForImageClassification": VISION + ["classifier"],
}


@pytest.fixture(scope="module")
def inputs():
    ids, mask = text_inputs(TINY_TEXT, batch=2)
    return {"input_ids": ids, "attention_mask": mask, "pixel_values": pixel_inputs(TINY_VISION, batch=2)}


@pytest.fixture(scope="module")
def tiny(checkpoints):
    return checkpoints("tiny")


@pytest.fixture(scope="module")
def stages(tiny, inputs):
    return V.capture(CLIPModel.from_pretrained(tiny), **inputs)


@pytest.fixture(scope="module")
def golden(tiny, inputs, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("golden") / "ref.npz")
    V.export_reference(CLIPModel.from_pretrained(tiny), inputs, path, tiny)
    return path


def cli(*argv):
    """npclip's command line when it has the command, else python -m npclip.verify's."""
    from npclip import cli as npclip_cli

    if argv[0] in npclip_cli.COMMANDS:
        return npclip_cli.main(list(argv))
    return V.main(list(argv))


def passed_before(report, name):
    """Every stage before ``name`` passed."""
    rows = [r.name for r in report.rows]
    return all(r.status == "pass" for r in report.rows[: rows.index(name)])


# ----------------------------------------------------------------------------------------------
# capture


def test_capture_names_every_stage_in_data_flow_order(tiny, inputs, stages):
    model = CLIPModel.from_pretrained(tiny)
    assert list(stages) == EXPECTED["CLIPModel"] == V.stage_names(model)
    out = model(**inputs)  # record=None: the normal call, unchanged
    np.testing.assert_array_equal(stages["logits_per_image"], out.logits_per_image)
    assert stages["vision_model.encoder.layers.0.mlp.fc1"].shape == (2, 26, TINY_VISION["intermediate_size"])


def test_capture_keeps_each_stage_as_computed(stages):
    """The model adds residuals in place into arrays it has recorded: capture must copy them."""
    for tower, first in (("vision_model", "vision_model.pre_layrnorm"), ("text_model", "text_model.embeddings")):
        x, p = stages[first], f"{tower}.encoder.layers.0"
        h = x + stages[p + ".self_attn"]
        np.testing.assert_allclose(stages[p], h + stages[p + ".mlp"], rtol=1e-5, atol=1e-5 * np.abs(h).max())


@pytest.mark.parametrize("cls_name", ["CLIPTextModel", "CLIPVisionModelWithProjection"])
def test_capture_of_single_towers(checkpoints, inputs, cls_name):
    model = getattr(npclip, cls_name).from_pretrained(checkpoints("tiny", cls_name))
    assert list(V.capture(model, **inputs)) == EXPECTED[cls_name] == V.stage_names(model)


def test_importing_verify_imports_no_ml_library():
    code = "import sys, npclip.verify; print(sorted({'torch', 'transformers', 'onnxruntime'} & set(sys.modules)))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.stdout.strip() == "[]", run.stderr


# ----------------------------------------------------------------------------------------------
# transformers as the candidate: it passes on random-weight checkpoints


@pytest.mark.parametrize("variant,cls_name", [
    ("tiny", "CLIPModel"), ("gelu", "CLIPModel"), ("legacy-eos", "CLIPModel"), ("tiny", "CLIPTextModel"),
    ("tiny", "CLIPTextModelWithProjection"), ("tiny", "CLIPVisionModel"),
    ("tiny", "CLIPVisionModelWithProjection"), ("tiny", "CLIPForImageClassification"),
])
def test_transformers_passes_at_every_stage(checkpoints, inputs, variant, cls_name):
    directory = checkpoints(variant, cls_name)
    model = getattr(npclip, cls_name).from_pretrained(directory)
    report = V.compare(V.capture(model, **inputs), V.run_transformers(directory, inputs, cls_name))
    assert report.passed, str(report)
    assert [r.name for r in report.rows] == EXPECTED[cls_name] == V.stage_names(model)
    assert report.missing == [] and report.extra == []


# ----------------------------------------------------------------------------------------------
# Broken candidates are caught at the right first stage


def test_wrong_layer_norm_epsilon_fails_at_that_layer_norm(tiny, inputs, stages):
    model = load_reference(tiny)
    model.text_model.encoder.layers[1].layer_norm2.eps = 1e-1
    report = V.compare(stages, V.run_transformers(model, inputs))
    assert report.first_failure == "text_model.encoder.layers.1.layer_norm2", str(report)
    assert passed_before(report, report.first_failure)  # the whole vision tower and text layers up to it


@pytest.mark.parametrize("tower", ["vision_model", "text_model"])
def test_exact_gelu_for_quick_gelu_fails_at_the_first_activation(tiny, inputs, stages, tower):
    model = load_reference(tiny)
    for layer in getattr(model, tower).encoder.layers:
        layer.mlp.activation_fn = torch.nn.GELU()
    report = V.compare(stages, V.run_transformers(model, inputs))
    assert report.first_failure == f"{tower}.encoder.layers.0.mlp.activation_fn", str(report)
    assert report.row(f"{tower}.encoder.layers.0.mlp.fc1").status == "pass"
    assert passed_before(report, report.first_failure)


def test_off_by_one_pooled_position_fails_at_the_pooled_output(tiny, inputs, stages, monkeypatch):
    pooled_positions = npclip.text.pooled_positions
    monkeypatch.setattr(npclip.text, "pooled_positions", lambda ids, eos: pooled_positions(ids, eos) - 1)
    report = V.compare(stages, V.capture(CLIPModel.from_pretrained(tiny), **inputs))
    assert report.first_failure == "text_model.pooler_output", str(report)
    assert report.row("text_model.final_layer_norm").status == "pass"
    assert {r.status for r in report.rows[-3:]} == {"FAIL"}  # text_projection and the logits follow


@pytest.mark.parametrize("cls_name,first", [("CLIPModel", "vision_model.embeddings"),
                                            ("CLIPTextModel", "text_model.embeddings")])
def test_float16_round_off_fails_the_float32_tolerance_and_passes_float16(checkpoints, inputs, cls_name, first):
    directory = checkpoints("tiny", cls_name)
    cls = getattr(npclip, cls_name)
    ours = V.capture(cls.from_pretrained(directory), **inputs)
    half = V.capture(cls.from_pretrained(directory, dtype="float16"), **inputs)
    report = V.compare(ours, half)
    assert report.first_failure == first, str(report)  # float16 weights and activations differ from the start
    row = report.row(first)
    assert row.bound == pytest.approx(1e-4 * max(1.0, float(np.abs(ours[first]).max())))
    assert row.max_abs > row.bound
    assert V.compare(ours, half, tol=V.parse_tol("float16")).passed


def test_an_edited_golden_file_fails_at_the_edited_stage(golden, tmp_path):
    g = V.read_golden(golden)
    name = "vision_model.encoder.layers.1.mlp.fc1"
    edited = dict(g.arrays)
    edited[name] = edited[name].copy()
    edited[name][1, 5, 7] += 0.01 * max(1.0, float(np.abs(edited[name]).max()))
    report = V.compare(golden, edited)
    assert report.first_failure == name and report.row(name).worst == (1, 5, 7), str(report)
    assert f"first failure: {name}" in str(report)


def test_missing_stages_shapes_and_token_ids(golden):
    g = V.read_golden(golden)
    partial = {k: v for k, v in g.arrays.items() if k != "text_model.final_layer_norm"}
    report = V.compare(golden, partial)
    assert report.passed and report.missing == ["text_model.final_layer_norm"]
    assert V.compare(golden, partial, require_all=True).first_failure == "text_model.final_layer_norm"
    bad = {**g.arrays, "text_projection": g.arrays["text_projection"][:, :-1]}
    assert V.compare(golden, bad).row("text_projection").note.startswith("shape")
    ids = g.arrays["input_ids"].copy()
    ids[0, 1] += 1
    report = V.compare(golden, {**g.arrays, "input_ids": ids})
    assert report.first_failure == "input_ids" and report.row("input_ids").bound == 0.0  # token ids are exact
    assert not V.compare(golden, {"unrelated": np.zeros(3)}).passed  # nothing compared is no pass
    logits = g.arrays["logits_per_text"].copy()
    logits[0, 0] = np.nan
    report = V.compare(golden, {**g.arrays, "logits_per_text": logits})
    assert report.first_failure == "logits_per_text" and json.loads(report.to_json())["rows"][-1]["max_abs"] == "inf"


def test_report_table_and_json(golden):
    report = V.compare(golden, golden)
    text = str(report)
    assert report.passed and report.first_failure is None
    assert "stage" in text.splitlines()[4] and "PASSED" in text.splitlines()[-1]
    data = json.loads(report.to_json())
    assert data["passed"] and data["counts"]["FAIL"] == 0
    assert [r["name"] for r in data["rows"]][:3] == ["input_ids", "attention_mask", "pixel_values"]


# ----------------------------------------------------------------------------------------------
# Golden files


def test_golden_file_format(golden, inputs):
    g = V.read_golden(golden)
    with open(V.manifest_path(golden), encoding="utf-8") as f:
        assert json.load(f) == g.manifest
    m = g.manifest
    assert m["format"] == V.FORMAT and m["model_class"] == "CLIPModel" and m["dtype"] == "float32"
    assert [e["name"] for e in m["stages"]] == EXPECTED["CLIPModel"]
    assert list(g.arrays) == list(V.INPUT_NAMES) + EXPECTED["CLIPModel"]
    np.testing.assert_array_equal(g.inputs["input_ids"], inputs["input_ids"])


CLEAN_READER = r"""
import importlib.abc, json, sys

class Forbid(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"npclip", "torch", "transformers", "safetensors", "PIL", "onnxruntime"}:
            raise ImportError(name + " is not needed to read a golden file")

sys.meta_path.insert(0, Forbid())
import numpy as np

npz, sidecar = sys.argv[1], sys.argv[2]
with np.load(npz, allow_pickle=False) as z:
    arrays = {k: z[k] for k in z.files}
manifest = json.loads(arrays.pop("__manifest__").tobytes().decode("utf-8"))
assert manifest == json.load(open(sidecar, encoding="utf-8")), "the two manifests differ"
assert manifest["format"] == "npclip-reference" and manifest["format_version"] == 1
for entry in manifest["inputs"] + manifest["stages"]:
    a = arrays.pop(entry["name"])
    assert list(a.shape) == entry["shape"] and str(a.dtype) == entry["dtype"], entry["name"]
    assert a.dtype.kind in "iu" or np.isfinite(a).all(), entry["name"]
assert not arrays, sorted(arrays)
print("ok", len(manifest["stages"]), manifest["model_class"], manifest["dtype"])
"""


def test_golden_file_reads_in_a_clean_process_with_only_numpy(golden, tmp_path):
    """What a port in another language sees: zip members <name>.npy and a JSON manifest."""
    run = subprocess.run([sys.executable, "-I", "-c", CLEAN_READER, golden, V.manifest_path(golden)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["ok", str(len(EXPECTED["CLIPModel"])), "CLIPModel", "float32"]


# ----------------------------------------------------------------------------------------------
# The command line


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Two golden files of a whole checkpoint (tokenizer, image processor) on the two photographs."""
    pytest.importorskip("npclip.tokenizer", reason="npclip.tokenizer is not written yet")
    pytest.importorskip("npclip.image_processing", reason="npclip.image_processing is not written yet")
    from _checkpoints import whole_checkpoint

    directory = whole_checkpoint(tmp_path_factory)
    out = tmp_path_factory.mktemp("exports")
    paths = [str(out / "a.npz"), str(out / "b.npz")]
    for path in paths:
        assert cli("export-reference", "--model", directory, "--out", path, "--images", *PHOTOS) == 0
    return directory, paths


def test_cli_export_writes_the_photographs_and_texts(exports):
    _, (a, _) = exports
    m = V.read_golden(a).manifest
    assert m["texts"] == list(V.DEFAULT_TEXTS)
    assert [i["name"] for i in m["images"]] == ["chelsea.png", "astronaut.png"]
    shapes = {e["name"]: e["shape"] for e in m["inputs"] + m["stages"]}
    assert shapes["pixel_values"][:2] == [2, 3] and shapes["logits_per_image"] == [2, 3]


def test_cli_two_exports_verify_against_each_other(exports, capsys):
    _, (a, b) = exports
    assert cli("verify", "--candidate", a, "--reference", b) == 0
    out = capsys.readouterr().out
    assert "PASSED" in out and "text_model.encoder.layers.1.mlp.activation_fn" in out


def test_cli_transformers_against_a_golden_file_json(exports, capsys):
    _, (a, _) = exports
    assert cli("verify", "--candidate", "transformers", "--reference", a, "--json") == 0  # model from manifest
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] and report["counts"]["missing"] == 0


def test_cli_npclip_reference_float16_candidate(exports, capsys):
    directory, _ = exports
    common = ("--model", directory, "--images", *PHOTOS, "--candidate", "npclip", "--candidate-dtype", "float16")
    assert cli("verify", *common, "--json") == 1
    assert json.loads(capsys.readouterr().out)["first_failure"] == "vision_model.embeddings"
    assert cli("verify", *common, "--tol", "float16") == 0


def test_cli_transformers_against_npclip_on_photographs(exports, capsys):
    directory, _ = exports
    assert cli("verify", "--candidate", "transformers", "--model", directory, "--images", *PHOTOS) == 0
    out = capsys.readouterr().out
    assert "candidate: transformers:" in out and "input_ids" not in out  # run on npclip's own inputs


def test_cli_export_of_a_text_model_needs_no_image(exports, tmp_path, capsys):
    directory, _ = exports
    out = str(tmp_path / "text.npz")
    assert cli("export-reference", "--model", directory, "--out", out) == 2  # CLIPModel: images required
    assert "--images is required" in capsys.readouterr().err
    assert cli("export-reference", "--model", directory, "--out", out, "--model-class", "CLIPTextModel",
               "--texts", "a photo of a cat") == 0
    m = V.read_golden(out).manifest
    assert m["model_class"] == "CLIPTextModel" and m["images"] == [] and m["texts"] == ["a photo of a cat"]
    assert [e["name"] for e in m["inputs"]] == ["input_ids", "attention_mask"]


def test_cli_broken_candidate_exits_non_zero(exports, tmp_path, capsys):
    _, (a, _) = exports
    g = V.read_golden(a)
    name = "text_model.encoder.layers.0.self_attn"
    arrays = {**g.arrays, name: g.arrays[name] * 1.01}
    V.write_golden(str(tmp_path / "bad.npz"), arrays, g.manifest)
    assert cli("verify", "--candidate", str(tmp_path / "bad.npz"), "--reference", a, "--json") == 1
    assert json.loads(capsys.readouterr().out)["first_failure"] == name
    # a looser bound for that stage only lets it through
    assert cli("verify", "--candidate", str(tmp_path / "bad.npz"), "--reference", a,
               "--stage-tol", "text_model.encoder.layers.0.*=2e-2") == 0


def test_cli_usage_errors(golden, tmp_path, capsys):
    assert cli("verify", "--candidate", "nonsense", "--reference", golden) == 2
    assert cli("verify", "--candidate", str(tmp_path / "absent.npz"), "--reference", golden) == 2
    assert "npclip verify" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# ONNX (onnxruntime; an optional extra, skipped when it is not installed)


class StageOutputs(torch.nn.Module):
    """A transformers CLIP model whose outputs are its stages, named by stage, for torch.onnx.export."""

    def __init__(self, model, names):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, input_ids, attention_mask, pixel_values):
        got, handles = {}, []
        for name in self.names:
            if name in ("text_model.pooler_output", "logits_per_image", "logits_per_text"):
                continue
            hook = (lambda n: lambda m, a, o: got.__setitem__(n, o[0] if isinstance(o, tuple) else o))(name)
            handles.append(self.model.get_submodule(name).register_forward_hook(hook))
        try:
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values)
        finally:
            for h in handles:
                h.remove()
        got.update(logits_per_image=out.logits_per_image, logits_per_text=out.logits_per_text)
        return tuple(got[n] for n in self.names)


def export_onnx(model, inputs, path, names):
    args = tuple(torch.from_numpy(inputs[k]) for k in V.INPUT_NAMES)
    torch.onnx.export(StageOutputs(model, names), args, path, input_names=list(V.INPUT_NAMES), output_names=names,
                      dynamo=False)  # the TorchScript exporter: the dynamo one needs onnxscript


@pytest.mark.filterwarnings("ignore")
def test_onnx_export_of_transformers_verifies_stage_by_stage(tiny, golden, inputs, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    names = [n for n in EXPECTED["CLIPModel"] if n != "text_model.pooler_output"]
    model = load_reference(tiny)
    export_onnx(model, inputs, str(tmp_path / "stages.onnx"), names)
    report = V.compare(golden, V.run_onnx(str(tmp_path / "stages.onnx"), inputs))
    assert report.passed and report.missing == ["text_model.pooler_output"], str(report)
    model.vision_model.encoder.layers[2].layer_norm1.eps = 1e-1  # a broken export is caught where it breaks
    export_onnx(model, inputs, str(tmp_path / "broken.onnx"), names)
    assert cli("verify", "--candidate", str(tmp_path / "broken.onnx"), "--reference", golden, "--json") == 1
    assert json.loads(capsys.readouterr().out)["first_failure"] == "vision_model.encoder.layers.2.layer_norm1"


@pytest.mark.filterwarnings("ignore")
def test_onnx_outputs_matched_by_name_or_renamed(tiny, golden, inputs, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    model = load_reference(tiny)
    args = tuple(torch.from_numpy(inputs[k]) for k in ("input_ids", "pixel_values", "attention_mask"))
    torch.onnx.export(model, args, str(tmp_path / "clip.onnx"), input_names=["input_ids", "pixel_values",
                      "attention_mask"], output_names=["logits_per_image", "per_text"], dynamo=False)
    spec = ("verify", "--candidate", str(tmp_path / "clip.onnx"), "--reference", golden)
    assert cli(*spec, "--rename", "per_text=logits_per_text", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["counts"]["pass"] == 2 and report["rows"][-1]["name"] == "logits_per_text"
    assert cli(*spec, "--rename", "per_text=logits_per_text", "--require-all") == 1  # other stages are missing


# ----------------------------------------------------------------------------------------------
# open_clip (optional: skipped when it is not installed, under CI too)


def open_clip_from_transformers(directory):
    """An open_clip CLIP with the weights of a transformers CLIP checkpoint (the inverse of
    transformers' convert_clip_original_pytorch_to_hf.py)."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
    from safetensors.torch import load_file

    hf = load_file(os.path.join(directory, "model.safetensors"))
    t, v = OPEN_CLIP_TEXT, OPEN_CLIP_VISION
    model = CLIP(t["projection_dim"], CLIPVisionCfg(layers=v["num_hidden_layers"], width=v["hidden_size"],
                                                    head_width=v["hidden_size"] // v["num_attention_heads"],
                                                    mlp_ratio=v["intermediate_size"] / v["hidden_size"],
                                                    patch_size=v["patch_size"], image_size=v["image_size"]),
                 CLIPTextCfg(context_length=t["max_position_embeddings"], vocab_size=t["vocab_size"],
                             width=t["hidden_size"], heads=t["num_attention_heads"], layers=t["num_hidden_layers"],
                             mlp_ratio=t["intermediate_size"] / t["hidden_size"]), quick_gelu=True)
    sd = {"logit_scale": hf["logit_scale"], "visual.proj": hf["visual_projection.weight"].T,
          "text_projection": hf["text_projection.weight"].T,
          "token_embedding.weight": hf["text_model.embeddings.token_embedding.weight"],
          "positional_embedding": hf["text_model.embeddings.position_embedding.weight"],
          "visual.class_embedding": hf["vision_model.embeddings.class_embedding"],
          "visual.positional_embedding": hf["vision_model.embeddings.position_embedding.weight"],
          "visual.conv1.weight": hf["vision_model.embeddings.patch_embedding.weight"]}
    for oc, ours in (("visual.ln_pre", "vision_model.pre_layrnorm"), ("visual.ln_post", "vision_model.post_layernorm"),
                     ("ln_final", "text_model.final_layer_norm")):
        sd.update({f"{oc}.{k}": hf[f"{ours}.{k}"] for k in ("weight", "bias")})
    for tower, oc in (("vision_model", "visual.transformer"), ("text_model", "transformer")):
        for i in range(LAYERS):
            p, q = f"{tower}.encoder.layers.{i}.", f"{oc}.resblocks.{i}."
            for k in ("weight", "bias"):
                sd[q + f"attn.in_proj_{k}"] = torch.cat([hf[p + f"self_attn.{x}_proj.{k}"] for x in "qkv"])
                for a, b in (("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"), ("attn.out_proj", "self_attn.out_proj"),
                             ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")):
                    sd[q + f"{a}.{k}"] = hf[p + f"{b}.{k}"]
    model.load_state_dict(sd, strict=True)
    return model.eval()


# open_clip sizes its MLP by a ratio and always adds its full position table: an even MLP width and
# inputs as long as the context; its text pools the highest token id (eos_token_id 2 in transformers).
OPEN_CLIP_TEXT = {**TINY_TEXT, "intermediate_size": 84, "max_position_embeddings": 16, "eos_token_id": 2}
OPEN_CLIP_VISION = {**TINY_VISION, "intermediate_size": 84}


def test_open_clip_passes_on_real_tokens(inputs, tmp_path):
    pytest.importorskip("open_clip")
    directory = make_checkpoint(tmp_path / "ckpt", text=OPEN_CLIP_TEXT, vision=OPEN_CLIP_VISION)
    ids, mask = text_inputs(OPEN_CLIP_TEXT, batch=3, seed=1)  # rows of 16, 6 and 3 real tokens
    inputs = {**inputs, "input_ids": ids, "attention_mask": mask}
    ours = {"attention_mask": mask, **V.capture(CLIPModel.from_pretrained(directory), **inputs)}
    candidate = {"attention_mask": mask, **V.run_open_clip(open_clip_from_transformers(directory), inputs)}
    report = V.compare(ours, candidate, ignore_padding=True)
    assert report.passed and report.missing == [], str(report)
    # open_clip has no padding mask: its padded positions differ, and only those
    assert V.compare(ours, candidate).first_failure == "text_model.encoder.layers.0.self_attn"
    short = {k: v[:, :10] for k, v in inputs.items() if k != "pixel_values"}  # shorter than open_clip's context
    ours = {**short, **V.capture(CLIPModel.from_pretrained(directory), **{**inputs, **short})}
    candidate = {**short, **V.run_open_clip(open_clip_from_transformers(directory), {**inputs, **short})}
    assert V.compare(ours, candidate, ignore_padding=True, require_all=True).passed


def test_scalar_stages_compare():
    from npclip.verify import compare_stage

    assert compare_stage("loss", np.float32(1.0), np.float32(1.0), 1e-4, 1e-4).status == "pass"
    assert compare_stage("loss", np.float32(1.0), np.float32(2.0), 1e-4, 1e-4).status == "FAIL"
