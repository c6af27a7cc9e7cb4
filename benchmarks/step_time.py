"""Train-step time and peak memory of the learned prompts vs the bare model, PEFT and full fine-tuning.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/step_time.py --threads 1 [--repeats 10] [--batch-size 8]

One process, one frozen SmolLM2-135M-Instruct (``smollm2-135m``), one batch: the first
``--batch-size`` examples of the K=16 SST-2 train split of data seed 13 (what a training step of
``benchmarks/learning_check.py`` sees), tokenised and padded once, outside the timed region.
A step is what ``prompting.training.loop.train`` does per batch: forward, cross-entropy over the label
scores, ``zero_grad``, backward, gradient clipping (1.0), ``AdamW.step``. The variants:

- ``soft``, ``ptuning``: ours, template ``{soft:2} {text_a}{soft:4} {mask}`` (6 soft tokens; the
  manual template ``Review: {text_a}\\nSentiment: {mask}`` with its two word groups replaced),
  P-tuning with its LSTM encoder (2-layer bi-LSTM + MLP head, hidden 576 = the LM's width);
  ``prefix``: ours, the manual template with a 10-position prefix, ``prefix_projection: true``
  (MLP hidden 512). These are the papers' sizes (15.3M and 6.2M trainable parameters).
- ``ptuning-64``, ``prefix-64``: the sizes the shipped experiment configs train
  (``experiments/quickstart.yaml``, ``sst2_compare.yaml``), under 1% of the LM: P-tuning with
  ``hidden_size: 64, residual: true`` (LSTM hidden 64; the prompt is the encoder's input vectors plus
  its output), prefix-tuning with ``prefix_hidden_size: 64`` (the same 10 positions and projection).
- ``bare``: the model's own ``forward`` + ``backward`` on exactly the ids the soft / P-tuning
  methods feed the LM (soft slots included, as their placeholder ids), same attention mask and
  positions, last-position logits only, the same loss; the LM frozen and the gradient taken w.r.t.
  the input embeddings (a leaf), so the backward pass runs through every layer as it must for a
  prompt. It has no optimizer step (there is nothing to update): the methods' encoders, clipping
  and Adam updates are part of their overhead.
- ``bare+kv10``: the bare model for prefix-tuning: the manual template's ids plus a key/value cache
  of 10 frozen positions at every layer (``DynamicCache``, the model's own API), i.e. the same
  total key length (10 + L) as prefix-tuning. A prefix position is keys and values only: it has no
  query, no MLP and no embedding; feeding the bare model 10 more real tokens would charge it work
  prefix-tuning never does (and flatter the ratio). With a frozen cache the bare model does the
  same attention over 10 + L keys, so the difference is the prefix itself: its MLP, the gradient
  into every layer's prefix keys/values, and its optimizer step.
- ``peft-soft``, ``peft-ptuning``, ``peft-prefix``: PEFT's ``PromptTuningConfig`` (6 virtual
  tokens), ``PromptEncoderConfig`` (6, ``encoder_reparameterization_type: LSTM``, hidden 576),
  ``PrefixTuningConfig`` (10, ``prefix_projection: true``, hidden 512) on the same model object.
  Their input is the same examples with the soft slots' ids removed (PEFT puts its virtual tokens
  in front), so the LM sees the same sequence length; same batch, same loss (cross-entropy over the
  log-softmax of the last position's logits at the label words " negative" / " positive"), the same
  learning rates as ours (``config_class.train_defaults``).
- ``peft-ptuning-64``, ``peft-prefix-64``: the same PEFT configs with ``encoder_hidden_size=64``, against
  ``ptuning-64`` and ``prefix-64``. PEFT's prompt encoder has no residual option: ``peft-ptuning-64``
  is the same LSTM + MLP encoder without the skip connection (one addition of a [6, 576] tensor, the
  only difference in work).
- ``full-ft``: PET few-shot fine-tuning (manual template, ``PromptMethod``, every LM parameter
  trained with AdamW), for the memory comparison (its time is shown too).

Every variant asks the LM for the last position's logits only, as an index tensor
(``logits_to_keep=torch.tensor([-1])``), which is what ours does (``prompting.lm.model._last_positions``):
given ``logits_to_keep=1``, transformers hands the LM head a strided view, and with the LM's weights
frozen torch then takes a slower matmul path on CPU (batch 8: 79 instead of 19 ms per forward), a
cost that would otherwise be charged to bare and PEFT only.

Timing: every round runs one step of each variant, in an order rotated by one each round (so no
variant always follows the same one); the first ``--warmup`` rounds are discarded; the table gives
the median over ``--repeats`` rounds. Interleaving spreads load changes on the machine over all
variants alike.

Peak memory: torch's profiler (``profile_memory=True``) records every allocation and free of the
c10 CPU allocator, which is where every CPU tensor lives (tracemalloc sees none of them). After the
timing, two more steps of each variant run under the profiler (the second is measured: the
profiler drops the frees of blocks allocated before it started, such as the previous step's
gradients); the running sum of the measured step's allocation events, in time order, gives the
most bytes the step held at once beyond what was alive when it began. Added to that: the bytes of the tensors alive at the step's start (the LM's weights, the
trainable parameters, their gradients from the previous step, which ``train`` frees only after the
forward pass, and the optimizer state), counted once per storage. The result is the peak of
live torch tensor bytes of a training step. It does not count memory outside torch's allocator
(Python objects, the allocator's own fragmentation, oneDNN/BLAS scratch buffers, shared libraries),
so it is lower than the process's RSS; it is exact for what the methods themselves allocate, and
unaffected by the machine's load. "above weights" subtracts the frozen LM's weights (the same for
every variant).

Writes benchmarks/results/step_time.{json,md} (``--out`` names another folder).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

import spread
from prompting import LanguageModel, Verbalizer, load_task, sample_kshot
from prompting.methods import build_method

ROOT = Path(__file__).resolve().parent
DATA = ROOT.parents[1] / "shared" / "data" / "sst2"

MANUAL = "Review: {text_a}\nSentiment: {mask}"
SLOTS = "{soft:2} {text_a}{soft:4} {mask}"  # "Review:" is 2 tokens, "\nSentiment:" 4
VERBALIZER = {"0": ["negative"], "1": ["positive"]}
PREFIX_LENGTH = 10
PREFIX_HIDDEN = 512
SMALL_HIDDEN = 64  # ptuning hidden_size and prefix_hidden_size in the shipped experiment configs
LAST = torch.tensor([-1])  # logits_to_keep: the last position, selected contiguously (as ours does)
DATA_SEED = 13
MAX_GRAD_NORM = 1.0


@dataclass
class Variant:
    name: str
    what: str
    loss: Callable[[], torch.Tensor]
    params: list[torch.nn.Parameter]  # what the optimizer updates (empty: bare)
    lr: float = 0.0
    seq_len: int = 0  # query positions the LM runs
    key_len: int = 0  # positions every attention layer attends to
    trainable: int = 0
    tune_lm: bool = False  # full fine-tuning: the LM's parameters need gradients during its step
    prompt: Callable[[], torch.Tensor] | None = None  # the prompt-side output alone, summed (see time_pieces)
    optimizer: torch.optim.Optimizer | None = None
    seconds: list[float] = field(default_factory=list)

    def __post_init__(self):
        if self.params:
            self.optimizer = torch.optim.AdamW(self.params, lr=self.lr, weight_decay=0.0)
        self.trainable = sum(p.numel() for p in self.params)


def label_loss(last_logits: torch.Tensor, word_ids: list[int], labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the label words' log-probabilities at the last position (as ours scores them)."""
    return F.cross_entropy(last_logits.float().log_softmax(-1)[:, word_ids], labels)


def step(variant: Variant, lm: LanguageModel) -> None:
    """One training step, in the order ``prompting.training.loop.train`` runs it."""
    if variant.tune_lm:
        lm.model.requires_grad_(True)
    try:
        loss = variant.loss()
        if variant.optimizer is not None:
            variant.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if variant.optimizer is not None:
            torch.nn.utils.clip_grad_norm_(variant.params, MAX_GRAD_NORM)
            variant.optimizer.step()
    finally:
        if variant.tune_lm:
            lm.model.requires_grad_(False)


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r):] = 1
    return ids, mask


def build_variants(lm: LanguageModel, examples, labels_names, only: set[str] | None) -> list[Variant]:
    from peft import (PrefixTuningConfig, PromptEncoderConfig, PromptEncoderReparameterizationType,
                      PromptTuningConfig, get_peft_model)

    verbalizer = Verbalizer(VERBALIZER)
    soft = build_method("soft", lm, SLOTS, verbalizer, labels=labels_names, init="uniform")
    ptuning = build_method("ptuning", lm, SLOTS, verbalizer, labels=labels_names, encoder="lstm")
    prefix = build_method("prefix", lm, MANUAL, verbalizer, labels=labels_names, prefix_length=PREFIX_LENGTH,
                          prefix_projection=True, prefix_hidden_size=PREFIX_HIDDEN)
    ptuning64 = build_method("ptuning", lm, SLOTS, verbalizer, labels=labels_names, encoder="lstm",
                             hidden_size=SMALL_HIDDEN, residual=True)
    prefix64 = build_method("prefix", lm, MANUAL, verbalizer, labels=labels_names, prefix_length=PREFIX_LENGTH,
                            prefix_projection=True, prefix_hidden_size=SMALL_HIDDEN)
    manual = build_method("manual", lm, MANUAL, verbalizer, labels=labels_names)
    if any(len(w) != 1 for w in soft.words.word_ids):
        raise SystemExit("the benchmark's loss assumes single-token label words")
    word_ids = [w[0] for w in soft.words.word_ids]

    slots_data, manual_data = soft.encode(examples), manual.encode(examples)
    slots_batch = next(soft.batches(slots_data, len(examples)))
    manual_batch = next(manual.batches(manual_data, len(examples)))
    labels = slots_batch.labels
    sp, mp = slots_batch.prompts[1], manual_batch.prompts[1]
    n_soft = sp.soft_positions.shape[1]
    # PEFT's input: the same examples without the soft slots (its virtual tokens go in front)
    plain_rows = [[t for i, t in enumerate(enc.input_ids) if i not in set(enc.soft_positions)]
                  for enc in slots_data.encodings[1]]
    plain_ids, plain_mask = left_pad(plain_rows, lm.pad_id)
    assert plain_ids.shape[1] + n_soft == sp.input_ids.shape[1]
    size = len(examples)
    layers, kv_heads, head_dim = lm.kv_shape
    frozen_kv = [(torch.randn(size, kv_heads, PREFIX_LENGTH, head_dim), torch.randn(size, kv_heads, PREFIX_LENGTH, head_dim))
                 for _ in range(layers)]

    def ours(method, batch):
        return lambda: F.cross_entropy(method(batch), batch.labels)

    def bare(p, kv=None):
        def loss():
            embeds = lm.embed(p.input_ids).detach().requires_grad_(True)
            mask, kwargs = p.attention_mask, {}
            if kv is not None:
                from transformers import DynamicCache

                mask = torch.cat([mask.new_ones(size, PREFIX_LENGTH), mask], 1)
                kwargs[lm.cache_argument()] = DynamicCache(ddp_cache_data=kv, config=lm.config)
            logits = lm.model(inputs_embeds=embeds, attention_mask=mask, position_ids=p.position_ids,
                              logits_to_keep=LAST, use_cache=False, **kwargs).logits
            return label_loss(logits[:, -1], word_ids, labels)
        return loss

    def peft(config, ids, mask, **kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = get_peft_model(lm.model, config)
        params = [p for p in model.parameters() if p.requires_grad]

        def loss():
            logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=LAST, **kwargs).logits
            return label_loss(logits[:, -1], word_ids, labels)
        return loss, params, model

    def peft_prompt(model):
        def total():
            out = model.get_prompt(size)
            if isinstance(out, torch.Tensor):
                return out.sum()
            return sum(layer.keys.sum() + layer.values.sum() for layer in out.layers)  # prefix: a cache
        return total

    L, Lm = sp.input_ids.shape[1], mp.input_ids.shape[1]
    own = lambda m: [p for p in m.parameters() if p.requires_grad]  # noqa: E731
    variants = [
        Variant("soft", f"ours, SoftPrompt, {n_soft} soft tokens", ours(soft, slots_batch), own(soft),
                soft.config_class.train_defaults["lr"], L, L, prompt=lambda: soft.soft_prompt.sum()),
        Variant("ptuning", f"ours, PTuning LSTM, {n_soft} soft tokens", ours(ptuning, slots_batch), own(ptuning),
                ptuning.config_class.train_defaults["lr"], L, L, prompt=lambda: ptuning.prompt_embeddings().sum()),
        Variant("ptuning-64", f"ours, PTuning LSTM hidden {SMALL_HIDDEN}, residual, {n_soft} soft tokens",
                ours(ptuning64, slots_batch), own(ptuning64), ptuning64.config_class.train_defaults["lr"], L, L,
                prompt=lambda: ptuning64.prompt_embeddings().sum()),
        Variant("prefix", f"ours, PrefixTuning MLP, {PREFIX_LENGTH} positions", ours(prefix, manual_batch),
                own(prefix), prefix.config_class.train_defaults["lr"], Lm, Lm + PREFIX_LENGTH,
                prompt=lambda: sum(t.sum() for t in prefix.prefix_key_values())),
        Variant("prefix-64", f"ours, PrefixTuning MLP hidden {SMALL_HIDDEN}, {PREFIX_LENGTH} positions",
                ours(prefix64, manual_batch), own(prefix64), prefix64.config_class.train_defaults["lr"], Lm, Lm + PREFIX_LENGTH,
                prompt=lambda: sum(t.sum() for t in prefix64.prefix_key_values())),
        Variant("bare", "model forward+backward, soft/ptuning ids, grad w.r.t. input embeddings", bare(sp), [],
                0.0, L, L),
        Variant("bare+kv10", f"model forward+backward, manual ids + {PREFIX_LENGTH} frozen cache positions",
                bare(mp, frozen_kv), [], 0.0, Lm, Lm + PREFIX_LENGTH),
    ]
    peft_specs = [
        ("peft-soft", f"PEFT PromptTuning, {n_soft} virtual tokens", soft.config_class.train_defaults["lr"],
         lambda: PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=n_soft),
         plain_ids, plain_mask, {"use_cache": False}, L, L),
        ("peft-ptuning", f"PEFT PromptEncoder LSTM, {n_soft} virtual tokens", ptuning.config_class.train_defaults["lr"],
         lambda: PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=n_soft,
                                     encoder_reparameterization_type=PromptEncoderReparameterizationType.LSTM,
                                     encoder_hidden_size=ptuning.config.hidden_size),
         plain_ids, plain_mask, {"use_cache": False}, L, L),
        ("peft-ptuning-64", f"PEFT PromptEncoder LSTM hidden {SMALL_HIDDEN} (no residual option), "
         f"{n_soft} virtual tokens", ptuning64.config_class.train_defaults["lr"],
         lambda: PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=n_soft,
                                     encoder_reparameterization_type=PromptEncoderReparameterizationType.LSTM,
                                     encoder_hidden_size=SMALL_HIDDEN),
         plain_ids, plain_mask, {"use_cache": False}, L, L),
        ("peft-prefix", f"PEFT PrefixTuning projection, {PREFIX_LENGTH} virtual tokens",
         prefix.config_class.train_defaults["lr"],
         lambda: PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=PREFIX_LENGTH, prefix_projection=True,
                                    encoder_hidden_size=PREFIX_HIDDEN),
         mp.input_ids, mp.attention_mask, {}, Lm, Lm + PREFIX_LENGTH),
        ("peft-prefix-64", f"PEFT PrefixTuning projection hidden {SMALL_HIDDEN}, {PREFIX_LENGTH} virtual tokens",
         prefix64.config_class.train_defaults["lr"],
         lambda: PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=PREFIX_LENGTH, prefix_projection=True,
                                    encoder_hidden_size=SMALL_HIDDEN),
         mp.input_ids, mp.attention_mask, {}, Lm, Lm + PREFIX_LENGTH),
    ]
    for name, what, lr, config, ids, mask, kwargs, q, k in peft_specs:
        if only is not None and name not in only:
            continue
        loss, params, model = peft(config(), ids, mask, **kwargs)
        variants.append(Variant(name, what, loss, params, lr, q, k, prompt=peft_prompt(model)))
    lm.model.requires_grad_(False)  # PEFT froze it already; be explicit
    full = Variant("full-ft", "PET fine-tuning, manual template, all LM parameters", ours(manual, manual_batch),
                   list(lm.model.parameters()), 1e-5, Lm, Lm, tune_lm=True)
    variants.append(full)
    if only is not None:
        variants = [v for v in variants if v.name in only]
    return variants


def time_pieces(variants: list[Variant], rounds: int, warmup: int = 3) -> dict:
    """Median ms of the prompt-side work alone, interleaved like the steps: the prompt (encoder) forward
    and backward with its summed output as the loss, and gradient clipping + AdamW step. This is all
    that differs between ours and PEFT, measured without the LM's 1.5 s around it."""
    pieces = [v for v in variants if v.prompt is not None]
    times = {v.name: {"prompt_forward_backward": [], "clip_and_optimizer": []} for v in pieces}
    for r in range(warmup + rounds):
        for v in pieces[r % len(pieces):] + pieces[: r % len(pieces)]:
            start = time.perf_counter()
            v.optimizer.zero_grad(set_to_none=True)
            v.prompt().backward()
            middle = time.perf_counter()
            torch.nn.utils.clip_grad_norm_(v.params, MAX_GRAD_NORM)
            v.optimizer.step()
            end = time.perf_counter()
            if r >= warmup:
                times[v.name]["prompt_forward_backward"].append(1000 * (middle - start))
                times[v.name]["clip_and_optimizer"].append(1000 * (end - middle))
    return {name: {k: statistics.median(x) for k, x in parts.items()} for name, parts in times.items()}


# --------------------------------------------------------------------------- memory
def storage_bytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        if t is None:
            continue
        storage = t.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
    return total


def alive_at_start(variant: Variant, lm: LanguageModel) -> int:
    """Bytes of the tensors a step starts with: LM weights, trainable parameters, their gradients, optimizer state."""
    tensors = list(lm.model.parameters()) + list(variant.params) + [p.grad for p in variant.params]
    if variant.optimizer is not None:
        for state in variant.optimizer.state.values():
            tensors += [v for v in state.values() if isinstance(v, torch.Tensor)]
    return storage_bytes(tensors)


def peak_step_bytes(variant: Variant, lm: LanguageModel) -> dict:
    """Peak live torch bytes of one step (see the module docstring).

    Two steps run under the profiler and only the second counts: the profiler drops the free of a
    block allocated before it started (the previous step's gradients, freed by ``zero_grad``), so
    in the first step those frees would be missing; every block the second step frees was allocated
    under the profiler.
    """
    from torch.profiler import ProfilerActivity, profile, record_function

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step(variant, lm)
        start = alive_at_start(variant, lm)  # no tensor is allocated here
        with record_function("measured_step"):
            step(variant, lm)
    events = list(prof.profiler.kineto_results.events())
    marker = next(e for e in events if e.name() == "measured_step")
    begin, end = marker.start_ns(), marker.start_ns() + marker.duration_ns()
    memory = sorted(((e.start_ns(), e.nbytes()) for e in events
                     if e.name() == "[memory]" and begin <= e.start_ns() <= end), key=lambda e: e[0])
    running = peak = 0
    for _, nbytes in memory:
        running += nbytes
        peak = max(peak, running)
    return {"alive_at_start_bytes": start, "step_peak_extra_bytes": peak, "peak_bytes": start + peak,
            "step_net_bytes": running, "allocation_events": len(memory)}


# --------------------------------------------------------------------------- report
def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import peft
    import transformers

    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}


PAIRS = {"soft": ("bare", "peft-soft"), "ptuning": ("bare", "peft-ptuning"), "prefix": ("bare+kv10", "peft-prefix"),
         "ptuning-64": ("bare", "peft-ptuning-64"), "prefix-64": ("bare+kv10", "peft-prefix-64"),
         "peft-soft": ("bare", None), "peft-ptuning": ("bare", None), "peft-prefix": ("bare+kv10", None),
         "peft-ptuning-64": ("bare", None), "peft-prefix-64": ("bare+kv10", None), "full-ft": ("bare", None)}


def ratio(a, b):
    return None if a is None or b is None else a / b


def markdown(result: dict) -> str:
    s, m, rows = result["settings"], result["machine"], result["variants"]
    by = {r["name"]: r for r in rows}
    full = by.get("full-ft", {}).get("memory", {}).get("peak_bytes")
    weights = result["lm_weight_bytes"]
    fmt = lambda x, spec=".2f": "–" if x is None else format(x, spec)  # noqa: E731
    md = [f"# Train-step time and peak memory: learned prompts vs bare model, PEFT, full fine-tuning ({s['model']})",
          "",
          f"{result['date']}; {m['cpu']} ({m['cores']} cores), torch {m['torch']}, transformers {m['transformers']}, "
          f"peft {m['peft']}; {s['threads']} torch thread(s) (OMP_NUM_THREADS={s['omp_num_threads']}, "
          f"niceness {s['niceness']}), "
          f"load average {result['load_average_start'][0]:.2f} at the start, {result['load_average_end'][0]:.2f} "
          "at the end.",
          "",
          f"Batch: {s['batch_size']} SST-2 train examples (K={s['k']} split of data seed {s['data_seed']}, its first "
          f"batch), mean {s['mean_tokens']:.1f} tokens per example with the manual template, padded to "
          f"{s['padded_length']}. Step = forward + loss + zero_grad + backward + clip + AdamW step, CPU, float32. "
          f"Median of {s['repeats']} interleaved rounds after {s['warmup']} warm-up rounds; ratios: median of the "
          "per-round ratios (min–max). "
          "Peak memory = live torch tensor bytes (weights, gradients, optimizer state, activations, temporaries), "
          "torch profiler allocation events; see the script's docstring.",
          "",
          "| variant | what | LM queries / keys | trainable params (% of LM) | median s/step | / bare | / PEFT | "
          "min s | peak MB | above weights MB | peak / full FT | above weights / full FT |",
          "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    full_above = None if full is None else full - weights
    for r in rows:
        bare_name, peft_name = PAIRS.get(r["name"], (None, None))
        med = r["median_seconds"]
        vs_bare = spread.per_round(r["seconds"], by.get(bare_name, {}).get("seconds"))
        vs_peft = spread.per_round(r["seconds"], by.get(peft_name, {}).get("seconds"))
        mem = r.get("memory", {})
        peak = mem.get("peak_bytes")
        above = None if peak is None else peak - weights
        md.append(f"| {r['name']} | {r['what']} | {r['seq_len']} / {r['key_len']} | {r['trainable']:,} "
                  f"({100 * r['trainable'] / result['lm_parameters']:.3g}%) | {med:.3f} | {spread.shown(vs_bare)} | "
                  f"{spread.shown(vs_peft)} | {min(r['seconds']):.3f} | {fmt(None if peak is None else peak / 2**20, '.0f')} | "
                  f"{fmt(None if above is None else above / 2**20, '.0f')} | {fmt(ratio(peak, full), '.3f')} | "
                  f"{fmt(ratio(above, full_above), '.3f')} |")
    md += ["", "/ bare: soft, ptuning (-64), PEFT soft / ptuning (-64) and full FT against `bare`; prefix (-64) and "
           "PEFT prefix (-64) against `bare+kv10`. / PEFT: ours against PEFT's implementation of the same method "
           "at the same size. -64: the sizes the shipped experiment configs train (P-tuning `hidden_size: 64, "
           "residual: true`, prefix `prefix_hidden_size: 64`); PEFT's prompt encoder has no residual option, so "
           "peft-ptuning-64 is the same encoder without the skip connection. "
           f"LM weights: {weights / 2**20:.0f} MB ({result['lm_parameters']:,} parameters, input and output "
           "embeddings tied). PEFT's prefix encoder starts from vectors as wide as one position's keys (192 here, "
           "grouped-query attention) where ours starts from the LM's width (576): hence its (576 - 192) x (10 + "
           "hidden) fewer parameters (200k at hidden 512, 28k at 64).",
           ""]
    pieces = result.get("prompt_side_ms") or {}
    if pieces:
        md += [f"Prompt-side work alone (ms, median of {s['piece_rounds']} interleaved rounds): the prompt's own "
               "forward + backward (its output summed as the loss; P-tuning: the LSTM encoder, prefix: the MLP, "
               "PEFT's at the batch size it uses), and clipping + AdamW step. Everything else in a step is the LM's "
               "forward and backward, the same work in ours and PEFT.", "",
               "| variant | prompt forward + backward | clip + AdamW | sum |", "|---|---:|---:|---:|"]
        for name, parts in pieces.items():
            total = parts["prompt_forward_backward"] + parts["clip_and_optimizer"]
            md.append(f"| {name} | {parts['prompt_forward_backward']:.1f} | {parts['clip_and_optimizer']:.1f} | "
                      f"{total:.1f} |")
        md.append("")
    if result.get("notes"):
        md += [result["notes"], ""]
    return "\n".join(md)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=10, help="timed rounds (one step of every variant each)")
    parser.add_argument("--warmup", type=int, default=2, help="rounds discarded first")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--data-dir", default=str(DATA))
    parser.add_argument("--only", default=None, help="comma list of variants (default: all)")
    parser.add_argument("--no-memory", action="store_true", help="skip the profiled memory step")
    parser.add_argument("--piece-rounds", type=int, default=20, help="rounds of the prompt-side timing (0: skip)")
    parser.add_argument("--notes", default="", help="a line added under the table")
    parser.add_argument("--out", default=str(ROOT / "results"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load_start = os.getloadavg()

    lm = LanguageModel.load(args.model, device="cpu")
    task = load_task("sst2", data_dir=args.data_dir)
    k = max(16, -(-args.batch_size // len(task.labels)))
    train_examples, _ = sample_kshot(task.train, k, DATA_SEED, task.labels)
    examples = train_examples[: args.batch_size]
    only = set(args.only.split(",")) if args.only else None
    variants = build_variants(lm, examples, task.labels, only)

    for r in range(args.warmup + args.repeats):
        for v in spread.rotated(variants, r):
            start = time.perf_counter()
            step(v, lm)
            elapsed = time.perf_counter() - start
            if r >= args.warmup:
                v.seconds.append(elapsed)
        print(f"round {r + 1}/{args.warmup + args.repeats}" + (" (warm-up)" if r < args.warmup else ""), flush=True)

    pieces = time_pieces(variants, args.piece_rounds) if args.piece_rounds else {}
    memory = {} if args.no_memory else {v.name: peak_step_bytes(v, lm) for v in variants}
    manual_encoder = build_method("manual", lm, MANUAL, Verbalizer(VERBALIZER), labels=task.labels)
    lengths = [len(e.input_ids) for e in manual_encoder.encode(examples).encodings[1]]
    result = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": {"model": args.model, "batch_size": args.batch_size, "k": k, "data_seed": DATA_SEED,
                     "repeats": args.repeats, "warmup": args.warmup, "threads": torch.get_num_threads(),
                     "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "niceness": os.nice(0), "slots_template": SLOTS,
                     "manual_template": MANUAL, "verbalizer": VERBALIZER, "prefix_length": PREFIX_LENGTH,
                     "prefix_hidden_size": PREFIX_HIDDEN, "small_hidden_size": SMALL_HIDDEN,
                     "logits_to_keep": LAST.tolist(), "max_grad_norm": MAX_GRAD_NORM, "piece_rounds": args.piece_rounds,
                     "mean_tokens": statistics.mean(lengths), "padded_length": max(lengths)},
        "lm_parameters": lm.num_parameters(),
        "lm_weight_bytes": storage_bytes(lm.model.parameters()),
        "load_average_start": load_start, "load_average_end": os.getloadavg(),
        "notes": args.notes,
        "prompt_side_ms": pieces,
        "variants": [{"name": v.name, "what": v.what, "seq_len": v.seq_len, "key_len": v.key_len,
                      "trainable": v.trainable, "lr": v.lr, "seconds": v.seconds,
                      "median_seconds": statistics.median(v.seconds), "min_seconds": min(v.seconds), "memory": memory.get(v.name, {})}
                     for v in variants],
    }
    by = {v["name"]: v for v in result["variants"]}
    result["ratios"] = {}
    weights, full = result["lm_weight_bytes"], by.get("full-ft", {}).get("memory", {}).get("peak_bytes")
    above = lambda peak: None if peak is None else peak - weights  # noqa: E731
    for name, (bare_name, peft_name) in PAIRS.items():
        if name not in by:
            continue
        peak = by[name]["memory"].get("peak_bytes")
        entry = {"time_vs_bare": spread.per_round(by[name]["seconds"], by.get(bare_name, {}).get("seconds")),
                 "time_vs_peft": spread.per_round(by[name]["seconds"], by.get(peft_name, {}).get("seconds")),
                 "peak_memory_vs_full_ft": ratio(peak, full),
                 "above_weights_vs_full_ft": ratio(above(peak), above(full)),
                 "trainable_percent": 100 * by[name]["trainable"] / result["lm_parameters"]}
        result["ratios"][name] = entry
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "step_time.json").write_text(json.dumps(result, indent=1) + "\n")
    md = markdown(result)
    (out / "step_time.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
