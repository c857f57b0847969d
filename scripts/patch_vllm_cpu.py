"""Patches the installed vllm-cpu so `vllm serve` runs a tiny MiniMaxM2ForCausalLM on CPU.

Run by scripts/setup.sh after installing vllm-cpu; idempotent (a second run changes nothing and
says so). Each patch looks for an exact anchor in the installed source and fails loudly (exit 1)
when the anchor is gone, which means the vllm-cpu version drifted and the patch must be revisited.

1. Distribution alias `vllm`. vllm-cpu installs the `vllm` package under the distribution name
   `vllm-cpu`, but the CLI (`vllm.entrypoints.cli.main`), run_batch, snapshots and
   `get_vllm_optional_dependencies` call `importlib.metadata.version("vllm")` ->
   PackageNotFoundError. We add a minimal `vllm-<ver>+cpu.dist-info` (METADATA copied from
   vllm-cpu with Name `vllm` and Version `<ver>+cpu`, no entry points so plugins are not
   registered twice). Platform detection (`vllm.platforms.vllm_version_matches_substr("cpu")`)
   tries `version("vllm")` first and only falls back to `version("vllm-cpu") + "+cpu"`: keeping
   the `+cpu` local version in the alias keeps the CPU platform detected.

2. Sigmoid + score-correction-bias routing in the CPU MoE router
   (`vllm/model_executor/layers/fused_moe/router/cpu_router.py`). The CPU router only handles
   softmax for plain top-k (`assert self.scoring_func == "softmax"`); MiniMax-M2 routes with
   sigmoid scores and `e_score_correction_bias`. The patch adds the same math as vLLM's GPU
   reference (`fused_topk_bias_router.fused_topk_bias` torch fallback): scores = sigmoid(logits);
   experts chosen by top-k of (scores + bias); weights are the UNBIASED scores of the chosen
   experts; renormalized when the layer says so (MiniMax-M2: renormalize=True); then multiplied
   by routed_scaling_factor.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
from pathlib import Path

MARK = "minimax-suite-patch"


class AnchorMissing(SystemExit):
    pass


def _fail(msg: str) -> None:
    print(f"patch_vllm_cpu: FAILED: {msg}", file=sys.stderr)
    raise AnchorMissing(1)


def vllm_dir() -> Path:
    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        _fail("vllm is not installed in this interpreter")
    return Path(list(spec.submodule_search_locations)[0])


# --------------------------------------------------------------------------- 1. dist alias
def patch_dist_alias() -> str:
    try:
        cpu_dist = importlib.metadata.distribution("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return "dist alias: skipped (no vllm-cpu distribution; a regular vllm is installed)"
    version = cpu_dist.version
    alias_version = f"{version}+cpu" if "cpu" not in version else version
    site = Path(str(cpu_dist.locate_file("")))
    alias = site / f"vllm-{alias_version}.dist-info"
    try:
        existing = importlib.metadata.version("vllm")
    except importlib.metadata.PackageNotFoundError:
        existing = None
    if existing is not None and alias.is_dir():
        if existing != alias_version:
            _fail(f"dist alias {alias} exists but reports version {existing!r}")
        return f"dist alias: already present ({alias.name})"
    if existing is not None:
        return f"dist alias: skipped (a `vllm` distribution {existing} already exists)"
    metadata = cpu_dist.read_text("METADATA")
    if not metadata or "\nName: vllm-cpu\n" not in metadata or f"\nVersion: {version}\n" not in metadata:
        _fail("vllm-cpu METADATA lacks the expected 'Name: vllm-cpu' / 'Version:' lines")
    metadata = metadata.replace("\nName: vllm-cpu\n", "\nName: vllm\n", 1)
    metadata = metadata.replace(f"\nVersion: {version}\n", f"\nVersion: {alias_version}\n", 1)
    alias.mkdir()
    (alias / "METADATA").write_text(metadata, encoding="utf-8")
    (alias / "INSTALLER").write_text(f"{MARK}\n", encoding="utf-8")
    (alias / "top_level.txt").write_text("vllm\n", encoding="utf-8")
    # RECORD lists only the alias's own files: `pip uninstall vllm` removes the alias, not the code.
    record = "".join(f"{alias.name}/{n},,\n" for n in ("METADATA", "INSTALLER", "top_level.txt", "RECORD"))
    (alias / "RECORD").write_text(record, encoding="utf-8")
    importlib.invalidate_caches()
    got = importlib.metadata.version("vllm")
    if got != alias_version:
        _fail(f"dist alias written but importlib.metadata.version('vllm') = {got!r}")
    return f"dist alias: wrote {alias.name} (importlib.metadata.version('vllm') = {got})"


# --------------------------------------------------------------------------- 2. sigmoid routing
ROUTER_REL = "model_executor/layers/fused_moe/router/cpu_router.py"

FUNC_ANCHOR = '''def _softmax_topk(
    router_logits: torch.Tensor,'''

FUNC_NEW = f'''def _sigmoid_bias_topk(  # {MARK}
    router_logits: torch.Tensor,
    top_k: int,
    renormalize: bool,
    e_score_correction_bias: torch.Tensor | None,
    routed_scaling_factor: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sigmoid scoring with an optional score-correction bias (MiniMax-M2,
    "noaux_tc"): the bias steers expert selection only; the returned weights
    are the unbiased sigmoid scores of the chosen experts, renormalized when
    asked, then scaled. Same math as fused_topk_bias's torch fallback."""
    scores = router_logits.float().sigmoid()
    if e_score_correction_bias is not None:
        scores_for_choice = scores + e_score_correction_bias.float().unsqueeze(0)
    else:
        scores_for_choice = scores
    topk_ids = torch.topk(scores_for_choice, k=top_k, dim=-1, sorted=False)[1]
    topk_weights = scores.gather(1, topk_ids)
    if renormalize:
        topk_weights = topk_weights / topk_weights.sum(dim=-1, keepdim=True)
    if routed_scaling_factor != 1.0:
        topk_weights = topk_weights * routed_scaling_factor
    return (
        topk_weights.to(torch.float32).contiguous(),
        topk_ids.to(torch.int32).contiguous(),
    )


''' + FUNC_ANCHOR

BRANCH_ANCHOR = '''        elif self.custom_routing_function is None:
            assert self.scoring_func == "softmax"
            return _softmax_topk(router_logits, self.top_k, self.renormalize)'''

BRANCH_NEW = f'''        elif (
            self.custom_routing_function is None and self.scoring_func == "sigmoid"
        ):  # {MARK}
            return _sigmoid_bias_topk(
                router_logits,
                self.top_k,
                self.renormalize,
                self.e_score_correction_bias,
                self.routed_scaling_factor,
            )
''' + BRANCH_ANCHOR


def patch_cpu_router(root: Path) -> str:
    path = root / ROUTER_REL
    if not path.is_file():
        _fail(f"{path} not found (vllm-cpu layout changed)")
    text = path.read_text(encoding="utf-8")
    if MARK in text:
        if "def _sigmoid_bias_topk(" not in text or 'self.scoring_func == "sigmoid"' not in text:
            _fail(f"{path} carries the patch mark but not the full patch; reinstall vllm-cpu")
        return f"cpu router: already patched ({path})"
    for name, anchor in (("_softmax_topk definition", FUNC_ANCHOR), ("softmax-only branch", BRANCH_ANCHOR)):
        if text.count(anchor) != 1:
            _fail(f"{path}: anchor '{name}' found {text.count(anchor)} times (want 1): version drift")
    text = text.replace(FUNC_ANCHOR, FUNC_NEW, 1).replace(BRANCH_ANCHOR, BRANCH_NEW, 1)
    compile(text, str(path), "exec")
    path.write_text(text, encoding="utf-8")
    for pyc in (path.parent / "__pycache__").glob(path.stem + ".*.pyc"):
        pyc.unlink()
    return f"cpu router: added sigmoid + e_score_correction_bias routing ({path})"


def main() -> int:
    root = vllm_dir()
    print(f"patch_vllm_cpu: vllm package at {root}")
    for step in (patch_dist_alias, lambda: patch_cpu_router(root)):
        print("patch_vllm_cpu: " + step())
    return 0


if __name__ == "__main__":
    sys.exit(main())
