"""medkit.rl benchmark: uncertainty routing, self-rewarding PPO, GRPO step speed vs TRL.

    python bench/rl.py            # CPU-sized defaults (a few minutes on 2 cores)
    python bench/rl.py --full     # larger routing sets only (never run: no GPU in the session that wrote this);
                                  # SR-PPO stays on the tiny LM, section 3 uses --speed-model (default SmolLM2)

1. Routing (arXiv 2510.20369): ``medkit.synth`` clinical cases; the n = 5 candidate answers
   of a case are the history-only differential (truth swapped in when missing). A
   PairwiseSNGP preference model on cheap bag-of-evidence features is trained on a few
   labelled (true, wrong) pairs; the judge is the knowledge-base naive-Bayes posterior
   given ALL the case's evidence (exam, labs, imaging too): an oracle-ish judge, not an LLM.
   Pairwise accuracy on (true, wrong) pairs, uncertainty vs random routing at budgets.
2. Self-rewarding PPO (arXiv 2510.21090) vs its SFT start: single-turn multiple-choice
   diagnosis. On CPU the policy is a tiny random-init LM with a word-level vocabulary
   (evidence and condition ids as tokens), because SmolLM2-135M takes seconds per
   forward pass on this shared 2-core machine.
3. GRPO step speed: medkit ``train_grpo`` vs TRL ``GRPOTrainer``, same model, LoRA,
   batch, lengths, device.
Writes ``bench/results/rl-<device>.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from medkit.synth.cases import CasesConfig, generate_cases  # noqa: E402
from medkit.synth.knowledge import load_knowledge_base, log_posterior_indexed  # noqa: E402

SEEDS = (0, 1, 2)


# ----------------------------------------------------------------------------- 1. routing
def candidates(case: dict, n: int = 5) -> list[str]:
    ids = [d["id"] for d in case["differential"]][:n]
    if case["diagnosis"]["id"] not in ids:
        ids[-1] = case["diagnosis"]["id"]
    return ids


def features(kb, case: dict, cand: list[str]) -> torch.Tensor:
    """Cheap per-answer features from the history only: differential p, rank, prior, evidence overlap."""
    dp = {d["id"]: d["p"] for d in case["differential"]}
    hist = case["evidences"]["symptom"] + case["evidences"]["history"]
    rows = []
    for r, cid in enumerate(cand):
        c = kb.condition(cid)
        listed = [e for e in hist if e in c.likelihoods]
        rows.append([dp.get(cid, 0.0), r / len(cand), float(kb.log_prior[kb.cond_index[cid]]) / 5.0,
                     len(listed) / max(1, len(hist)), float(np.mean([c.likelihoods[e] for e in listed])) if listed else 0.0])
    return torch.tensor(rows, dtype=torch.float32)


def full_evidence_scores(kb, case: dict, cand: list[str]) -> list[float]:
    """The judge: naive-Bayes log posterior of each candidate given every evidence of the case."""
    present = {e for v in case["evidences"].values() for e in v}
    mask = np.array([kb.evidences[e].sex in (None, case["sex"]) for e in kb.ev_ids])
    pres = np.array([i for i, e in enumerate(kb.ev_ids) if e in present and mask[i]], dtype=int)
    absn = np.array([i for i, e in enumerate(kb.ev_ids) if e not in present and mask[i]], dtype=int)
    lp = log_posterior_indexed(kb, pres, absn, case["age"], case["sex"])
    return [float(lp[kb.cond_index[c]]) for c in cand]


def bench_routing(kb, seed: int, n_train: int, n_test: int, budgets=(0.10, 0.25, 0.50), batch: int = 16) -> dict:
    from medkit.rl import (
        PairwiseSNGP,
        preference_advantages,
        route_batch,
        routed_preferences,
        score_all_pairs,
        train_pairwise,
    )

    torch.manual_seed(seed)
    cases = generate_cases(CasesConfig(n_cases=n_train + n_test, seed=100 + seed), kb)
    train, test = cases[:n_train], cases[n_train:]
    xi, xj = [], []
    for c in train:  # labelled pairs: the true answer beats each wrong one
        cand = candidates(c)
        f = features(kb, c, cand)
        t = cand.index(c["diagnosis"]["id"])
        for k in range(len(cand)):
            if k != t:
                xi.append(f[t])
                xj.append(f[k])
    xi, xj = torch.stack(xi), torch.stack(xj)
    # random orientation so the label is not always 1
    flip = torch.rand(len(xi)) < 0.5
    a, b = torch.where(flip[:, None], xj, xi), torch.where(flip[:, None], xi, xj)
    model = PairwiseSNGP(xi.shape[1], hidden=32, n_rff=128, seed=seed)
    train_pairwise(model, a, b, (~flip).float(), epochs=150)

    gen = torch.Generator().manual_seed(seed)
    routers = {"uncertainty (GP std)": ("uncertainty", "std"), "uncertainty (mean-field margin)": ("uncertainty", "margin"),
               "random": ("random", "std")}
    # score every test case once: preference model (both uncertainty kinds) and judge
    per = []
    for c in test:
        cand = candidates(c)
        f = features(kb, c, cand)
        p, u_std = score_all_pairs(model, f, kind="std")
        _, u_mar = score_all_pairs(model, f, kind="margin")
        js = full_evidence_scores(kb, c, cand)
        per.append({"p": p, "std": u_std, "margin": u_mar, "js": js, "t": cand.index(c["diagnosis"]["id"])})
    res = {}
    for frac in (0.0, *budgets, 1.0):
        for name, (mode, kind) in routers.items():
            if frac in (0.0, 1.0) and name != "random":
                continue
            label = name if frac not in (0.0, 1.0) else ("preference model only" if frac == 0 else "judge on all pairs")
            correct = total = top1 = judged = pairs = 0.0
            for b0 in range(0, len(per), batch):  # one judge budget per batch of prompts (an RL step)
                chunk = per[b0:b0 + batch]
                n_pairs = sum(x["p"].shape[0] * (x["p"].shape[0] - 1) // 2 for x in chunk)
                masks = route_batch([x[kind] for x in chunk], int(round(frac * n_pairs)), mode=mode, generator=gen)
                for x, sel in zip(chunk, masks):
                    js, t, n = x["js"], x["t"], x["p"].shape[0]
                    pf, nj, _ = routed_preferences(x["p"], sel, lambda i, j, js=js: float(np.sign(js[i] - js[j])))
                    for w in range(n):
                        if w != t:
                            correct += 1.0 if pf[t, w] > 0 else 0.5 if pf[t, w] == 0 else 0.0
                            total += 1
                    top1 += float(int(torch.argmax(preference_advantages(pf))) == t)
                    judged += nj
                    pairs += n * (n - 1) / 2
            res.setdefault(f"{frac:.2f}", {})[label] = {"pair_acc": correct / total, "top1": top1 / len(test),
                                                       "judged_frac": judged / pairs}
    return res


# ----------------------------------------------------------------------------- 2. SR-PPO
def word_tokenizer(kb):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<eos>", "<bos>", "<unk>", "male", "female", "child", "adult", "older", "options:", "answer:"]
    vocab = {w: i for i, w in enumerate(words + kb.ev_ids + kb.condition_ids)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>",
                                  unk_token="<unk>")
    tok.padding_side = "left"
    return tok


def mc_prompt(case: dict, rng: np.random.Generator) -> str:
    cand = candidates(case, 4)
    rng.shuffle(cand)
    age = "child" if case["age"] < 16 else "adult" if case["age"] < 65 else "older"
    ev = " ".join(case["evidences"]["symptom"] + case["evidences"]["history"])
    return f"{case['sex']} {age} {ev} options: {' '.join(cand)} answer: "


@torch.no_grad()
def evaluate(model, tok, judge, prompts, answers) -> dict:
    from medkit.lm import generate

    greedy = generate(model, tok, prompts, max_new_tokens=2, do_sample=False)
    acc = float(np.mean([t.strip().split(" ")[0] == a if t.strip() else False for t, a in zip(greedy.texts, answers)]))
    sampled = generate(model, tok, prompts, max_new_tokens=2, temperature=1.0)
    sr = judge(prompts, sampled.texts, rollout=sampled)
    return {"accuracy": acc, "self_reward": float(sr.mean())}


def bench_sr_ppo(kb, seed: int, full: bool, work: Path) -> dict:
    from medkit.lm import add_lora, add_value_head, tiny_causal_lm
    from medkit.rl import PPOConfig, SelfReward, SFTConfig, sft, train_ppo

    cases = generate_cases(CasesConfig(n_cases=430, seed=7), kb)  # same data for every seed
    rng = np.random.default_rng(0)
    prompts = [mc_prompt(c, rng) for c in cases]
    answers = [c["diagnosis"]["id"] for c in cases]
    sft_idx, rl_idx, test_idx = range(0, 80), range(80, 280), range(280, 430)
    tok = word_tokenizer(kb)
    torch.manual_seed(seed)
    # SFT is full fine-tuning of the random-init tiny LM: LoRA on a random base cannot
    # move its logits (final RMSNorm + 0.02-scale tied embeddings bound them; tried: the
    # LoRA-SFT policy collapsed to the most common answer). pi_base = the random init.
    model, _ = tiny_causal_lm(tok, layers=2, hidden=64, seed=seed)
    base = copy.deepcopy(model)
    sft(model, tok, [prompts[i] for i in sft_idx], [answers[i] for i in sft_idx],
        SFTConfig(out_dir=str(work / f"sft{seed}"), steps=200, batch_size=16, lr=3e-3, seed=seed, device="cpu",
                  resume=False, save_every=0))
    judge = SelfReward(copy.deepcopy(model), base_model=base)
    # PPO policy = SFT weights + LoRA (reference = adapter disabled = the SFT model) + value head
    lora = {"r": 16, "lora_alpha": 32, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                          "up_proj", "down_proj", "lm_head"]}
    model = add_value_head(add_lora(model, lora))
    tp, ta = [prompts[i] for i in test_idx], [answers[i] for i in test_idx]
    torch.manual_seed(seed)
    before = evaluate(model, tok, judge, tp, ta)
    # PPO on prompts WITHOUT demonstrations: reward = self-reward only
    train_ppo(model, tok, [prompts[i] for i in rl_idx], [judge],
              PPOConfig(out_dir=str(work / f"ppo{seed}"), steps=40, batch_size=32, mini_batch_size=16, ppo_epochs=2,
                        max_new_tokens=2, lr=1e-3, kl_coef=0.02, seed=seed, device="cpu", resume=False))
    torch.manual_seed(seed)
    after = evaluate(model, tok, judge, tp, ta)
    return {"sft": before, "sr_ppo": after}


# ----------------------------------------------------------------------------- 3. speed
def bench_speed(spec: str, steps: int, prompts_per_step: int, G: int, max_new: int, work: Path) -> dict:
    from medkit.lm import chat_prompt, load_causal_lm, load_tokenizer, tiny_causal_lm
    from medkit.rl import GRPOConfig, train_grpo

    lora = {"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"], "lora_dropout": 0.0}

    def fresh():
        torch.manual_seed(0)
        if spec == "tiny":
            return tiny_causal_lm(load_tokenizer("smollm2-135m-instruct"), layers=2, hidden=64)
        return load_causal_lm(spec, device="cpu")

    def reward(prompts, completions, **kw):
        return [float(len(c) % 7) for c in completions]

    model, tok = fresh()
    prompts = [chat_prompt(tok, f"Patient {i}: cough and fever for {i + 2} days. Most likely diagnosis?") for i in range(16)]
    out = {}
    # medkit
    from medkit.lm import add_lora

    m = add_lora(model, lora)
    cfg = GRPOConfig(out_dir=str(work / "mk_grpo"), steps=steps + 1, prompts_per_step=prompts_per_step, group_size=G,
                     max_new_tokens=max_new, lr=1e-5, beta=0.0, device="cpu", resume=False)
    train_grpo(m, tok, prompts, [reward], cfg)
    rows = [json.loads(x) for x in (work / "mk_grpo" / "logs" / "metrics.jsonl").read_text().splitlines()][1:]
    out["medkit"] = {"s_per_step": statistics.median(r["step_s"] for r in rows),
                     "tokens_per_s": statistics.median(r["tokens_per_s"] for r in rows),
                     "completion_len": statistics.mean(r["resp_len"] for r in rows)}
    # TRL: its default (gradient checkpointing on) and with it off, like medkit
    for name, gc in (("trl (default: grad checkpointing)", True), ("trl (grad checkpointing off)", False)):
        try:
            out[name] = _trl_run(fresh, prompts, reward, lora, steps, prompts_per_step, G, max_new, gc, work)
        except Exception as e:  # report, do not hide: the table says TRL did not run and why
            out[name] = {"error": f"{type(e).__name__}: {e}"[:300]}
    return out


def _trl_run(fresh, prompts, reward, lora, steps, prompts_per_step, G, max_new, gc, work) -> dict:
    import datasets
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import GRPOConfig as TRLConfig
    from trl import GRPOTrainer

    class Timer(TrainerCallback):
        def __init__(self):
            self.t, self.times = 0.0, []

        def on_step_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.times.append(time.perf_counter() - self.t)

    model, tok = fresh()
    timer = Timer()
    args = TRLConfig(output_dir=str(work / "trl"), per_device_train_batch_size=prompts_per_step * G,
                     num_generations=G, max_completion_length=max_new, max_steps=steps + 1, learning_rate=1e-5,
                     beta=0.0, logging_steps=1, report_to="none", use_cpu=True, save_strategy="no",
                     temperature=1.0, top_k=0, top_p=1.0, bf16=False, disable_dropout=True, gradient_checkpointing=gc)
    ds = datasets.Dataset.from_dict({"prompt": prompts})
    tr = GRPOTrainer(model=model, reward_funcs=[reward], args=args, train_dataset=ds, processing_class=tok,
                     peft_config=LoraConfig(task_type="CAUSAL_LM", **lora), callbacks=[timer])
    tr.train()
    lens = [h["completions/mean_length"] for h in tr.state.log_history if "completions/mean_length" in h][1:]
    s = statistics.median(timer.times[1:])
    return {"s_per_step": s, "tokens_per_s": statistics.mean(lens) * prompts_per_step * G / s,
            "completion_len": statistics.mean(lens)}


# ----------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--full", action="store_true", help="GPU sizes (SmolLM2 in section 3); not for CPU")
    ap.add_argument("--only", default="1,2,3")
    ap.add_argument("--speed-model", default="smollm2-135m-instruct", help="model of section 3, or 'tiny'")
    args = ap.parse_args()
    only = set(args.only.split(","))
    kb = load_knowledge_base()
    work = Path(tempfile.mkdtemp(prefix="medkit-bench-rl-"))
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    if dev == "cpu":
        # one thread: on a small shared CPU box torch's default (one per core) thrashes
        # (a tiny-LM step measured 60x slower); both trainers in section 3 get the same.
        torch.set_num_threads(1)
    import transformers

    result = {"machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "device": dev,
                          "torch_threads": torch.get_num_threads()},
              "versions": {"python": platform.python_version(), "torch": torch.__version__,
                           "transformers": transformers.__version__},
              "seeds": list(SEEDS), "full": args.full}
    try:
        import trl

        result["versions"]["trl"] = trl.__version__
    except ImportError:
        result["versions"]["trl"] = None

    if "1" in only:
        t0 = time.time()
        runs = [bench_routing(kb, s, n_train=20 if not args.full else 200, n_test=150 if not args.full else 2000)
                for s in SEEDS]
        agg = {}
        for b in runs[0]:
            for name in runs[0][b]:
                vals = [r[b][name] for r in runs]
                agg.setdefault(b, {})[name] = {k: (statistics.mean(v[k] for v in vals), statistics.pstdev(v[k] for v in vals))
                                               for k in vals[0]}
        result["routing"] = {"judge": "knowledge-base naive-Bayes posterior with all evidence (oracle-ish, not an LLM)",
                             "preference_model": "PairwiseSNGP on 5 bag-of-evidence features, 20 training cases (80 pairs)",
                             "per_seed": runs, "mean_std": agg, "seconds": time.time() - t0}
        print("\n## 1. Judge routing: pairwise accuracy on (true, wrong) pairs, mean +- std over 3 seeds")
        print("| budget | router | judged % | pair acc | top-1 of A_i |\n|---|---|---|---|---|")
        for b, d in agg.items():
            for name, v in d.items():
                print(f"| {float(b) * 100:.0f}% | {name} | {v['judged_frac'][0] * 100:.1f} | "
                      f"{v['pair_acc'][0]:.3f} +- {v['pair_acc'][1]:.3f} | {v['top1'][0]:.3f} +- {v['top1'][1]:.3f} |")

    if "2" in only:
        t0 = time.time()
        runs = [bench_sr_ppo(kb, s, args.full, work) for s in SEEDS]
        result["sr_ppo"] = {"policy": "tiny random-init Llama (2 layers, hidden 64, word-level vocab); SFT full fine-tune on 80 demos; PPO: LoRA r=16 + value head, self-reward only, 200 prompts without demos, 40 steps x 32",
                            "per_seed": runs, "seconds": time.time() - t0}
        print("\n## 2. Self-rewarding PPO vs SFT (held-out 150 cases, 4-option multiple choice; chance 0.25)")
        print("| seed | SFT acc | SR-PPO acc | SFT self-reward | SR-PPO self-reward |\n|---|---|---|---|---|")
        for s, r in zip(SEEDS, runs):
            print(f"| {s} | {r['sft']['accuracy']:.3f} | {r['sr_ppo']['accuracy']:.3f} | {r['sft']['self_reward']:.3f} | "
                  f"{r['sr_ppo']['self_reward']:.3f} |")
        m = {k: statistics.mean(r[a][k] for r in runs) for a in ("sft", "sr_ppo") for k in ("accuracy",)}
        print(f"| mean | {statistics.mean(r['sft']['accuracy'] for r in runs):.3f} | "
              f"{statistics.mean(r['sr_ppo']['accuracy'] for r in runs):.3f} | "
              f"{statistics.mean(r['sft']['self_reward'] for r in runs):.3f} | "
              f"{statistics.mean(r['sr_ppo']['self_reward'] for r in runs):.3f} |")
        del m

    if "3" in only:
        t0 = time.time()
        spec = args.speed_model
        sp = bench_speed(spec, steps=3, prompts_per_step=2, G=4, max_new=16, work=work)
        result["speed"] = {"model": spec if spec != "tiny" else "tiny Llama (2 layers, hidden 64) with the SmolLM2 "
                           "tokenizer (49k vocab)", "lora": "r=8 on q/v", "threads": torch.get_num_threads(),
                           "batch": "2 prompts x 4 completions, 16 new tokens, beta 0",
                           **sp, "seconds": time.time() - t0}
        print(f"\n## 3. GRPO step on {spec}: medkit vs TRL GRPOTrainer (same model, LoRA r=8, 2x4 completions, "
              f"16 new tokens, {dev}, {torch.get_num_threads()} thread(s); median of 3 steps after 1 warm-up)")
        print("| trainer | s/step | tokens/s | mean completion len |\n|---|---|---|---|")
        for k, v in sp.items():
            if "error" in v:
                print(f"| {k} | did not run: {v['error']} | | |")
            else:
                print(f"| {k} | {v['s_per_step']:.3f} | {v['tokens_per_s']:.1f} | {v['completion_len']:.1f} |")
        for k, v in sp.items():
            if k != "medkit" and "error" not in v:
                r = sp["medkit"]["s_per_step"] / v["s_per_step"]
                result["speed"][f"ratio_s_per_step_medkit_over_{k}"] = r
                print(f"| ratio medkit / {k} | {r:.2f} | {sp['medkit']['tokens_per_s'] / v['tokens_per_s']:.2f} | |")

    out = Path(__file__).resolve().parent / "results" / f"rl-{dev}.json"
    from medkit.io.atomic import write_json

    write_json(out, json.loads(json.dumps(result, default=lambda o: None if isinstance(o, float) and math.isnan(o) else str(o))))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
