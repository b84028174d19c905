"""Uncertainty routing of judge calls (arXiv 2510.20369), framed as the paper does.

For each case (a prompt) the n = 5 candidate diagnoses (responses) form 10 unordered
pairs. A pairwise preference model scores every pair with an uncertainty; under a judge
budget (10 / 25 / 50 % of the pairs of a batch of 16 cases, one RL step) the most
uncertain pairs go to the judge, whose label replaces the model's. The SAME pairs are
routed and scored: accuracy is over all pairs, against the judge (the knowledge-base
posterior given all of the case's evidence; the preference model sees history and
symptoms only). The RL-facing number is top-1: does the true diagnosis get the largest
advantage A_i = mean_j p_ij?

The preference model reads what a reader of the case and the answer sees (which of the
patient's findings the named condition lists, demographic fit, the answer's identity), not
the knowledge-base posterior (that is the judge's).

Shift: the preference model is trained on cases and answers of some conditions (or on
adults) and tested on cases of held-out conditions (or children and older patients), where
epistemic uncertainty has something to flag; ``iid`` is the in-distribution reference.

Routers: SNGP GP std of the logit (the paper's), the same std on the preference scale
(delta method), the SNGP mean-field margin (total uncertainty), a deep ensemble's
disagreement (logit and preference scale), and random pairs (the control; mean of 5
draws). For each model the scale of its std (logit or preference) is also chosen per seed
on in-distribution validation cases (AUROC of the model's errors): the ``*_selected`` rows.
"""

from __future__ import annotations

import numpy as np
import torch

from bench.rl_data import AGE_GROUPS, age_group, candidates, features, judge_scores
from medkit.synth.cases import CasesConfig, generate_cases

BUDGETS = (0.10, 0.25, 0.50)
SETTINGS = ("conditions", "age", "iid")
KINDS = {"gp_std": ("gp", "std"), "gp_pref_std": ("gp", "pref_std"), "gp_margin": ("gp", "margin"),
         "ens_std": ("ens", "std"), "ens_pref_std": ("ens", "pref_std")}
DEFAULTS = {"n_train": 400, "n_val": 200, "n_test": 500, "n_candidates": 5, "batch": 16, "hidden": 64, "n_rff": 256,
            "epochs": 300, "lr": 1e-2, "members": 5, "random_draws": 5, "held_out_frac": 0.3}


def split_cases(kb, setting: str, seed: int, n_train: int, n_test: int, held_out_frac: float,
                n_val: int = 0) -> tuple[list, list, list, dict]:
    """Train, validation (the training distribution) and test cases for one seed (the held-out
    conditions are drawn from the seed too). ``info["allowed"]``: the conditions training
    answers may name (None: all)."""
    cases = generate_cases(CasesConfig(n_cases=6000, seed=1000 + seed), kb)
    rng = np.random.default_rng(seed)
    info: dict = {"allowed": None}
    if setting == "conditions":
        ids = kb.condition_ids
        held = set(rng.choice(ids, size=int(round(held_out_frac * len(ids))), replace=False).tolist())
        train = [c for c in cases if c["diagnosis"]["id"] not in held]
        test = [c for c in cases if c["diagnosis"]["id"] in held]
        info = {"held_out_conditions": sorted(held), "allowed": {c for c in ids if c not in held}}
    elif setting == "age":
        train = [c for c in cases if age_group(c["age"]) == "adult"]
        test = [c for c in cases if age_group(c["age"]) != "adult"]
        info = {"allowed": None, "train_ages": list(AGE_GROUPS["adult"]), "test": "children and older patients"}
    elif setting == "iid":
        order = rng.permutation(len(cases))
        train, test = [cases[i] for i in order[: len(cases) // 2]], [cases[i] for i in order[len(cases) // 2:]]
    else:
        raise ValueError(setting)
    order = rng.permutation(len(train))
    tr, va = [train[i] for i in order[:n_train]], [train[i] for i in order[n_train:n_train + n_val]]
    te = [test[i] for i in rng.permutation(len(test))[:n_test]]
    if len(te) < n_test or len(tr) < n_train or len(va) < n_val:
        raise RuntimeError(f"{setting} seed {seed}: only {len(tr)} train / {len(va)} val / {len(te)} test cases")
    return tr, va, te, info


def _pairs(kb, cases, n, allowed):
    """Training pairs of every case: features of i and j, label 1 when the judge prefers i."""
    xi, xj, y = [], [], []
    for c in cases:
        cand = candidates(c, n, kb, allowed)
        f, js = features(kb, c, cand), judge_scores(kb, c, cand)
        for i in range(n):
            for j in range(i + 1, n):
                xi.append(f[i])
                xj.append(f[j])
                y.append(float(js[i] > js[j]))
    return torch.stack(xi), torch.stack(xj), torch.tensor(y)


def auroc(score: np.ndarray, positive: np.ndarray) -> float | None:
    """P(score of a random positive > score of a random negative), ties half (Mann-Whitney)."""
    from scipy.stats import rankdata

    pos = positive.astype(bool)
    n1, n0 = int(pos.sum()), int((~pos).sum())
    if n1 == 0 or n0 == 0:
        return None
    r = rankdata(score)
    return float((r[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def deciles(u: np.ndarray, correct: np.ndarray) -> list[dict]:
    """Preference-model accuracy in each decile of uncertainty (1 = least uncertain)."""
    edges = np.quantile(u, np.linspace(0, 1, 11))
    b = np.clip(np.searchsorted(edges, u, side="right") - 1, 0, 9)
    return [{"decile": k + 1, "n": int((b == k).sum()), "correct": int(correct[b == k].sum()),
             "u_mean": float(u[b == k].mean()) if (b == k).any() else None} for k in range(10)]


def routing_cell(kb, setting: str, seed: int, **kw) -> dict:
    """One (setting, seed) cell: train both preference models, route at every budget."""
    from medkit.rl import (
        PairwiseEnsemble,
        PairwiseSNGP,
        preference_advantages,
        route_batch,
        routed_preferences,
        score_all_pairs,
        train_pairwise,
    )

    o = {**DEFAULTS, **kw}
    n = o["n_candidates"]
    torch.manual_seed(seed)
    train, val, test, info = split_cases(kb, setting, seed, o["n_train"], o["n_test"], o["held_out_frac"], o["n_val"])
    allowed = info.pop("allowed")
    xi, xj, y = _pairs(kb, train, n, allowed)
    sngp = PairwiseSNGP(xi.shape[1], hidden=o["hidden"], n_rff=o["n_rff"], seed=seed)
    curve_gp = train_pairwise(sngp, xi, xj, y, epochs=o["epochs"], lr=o["lr"])
    ens = PairwiseEnsemble(xi.shape[1], hidden=o["hidden"], members=o["members"], seed=seed)
    curve_ens = train_pairwise(ens, xi, xj, y, epochs=o["epochs"], lr=o["lr"])

    models = {"gp": sngp, "ens": ens}
    iu = torch.triu_indices(n, n, offset=1)

    def score(cases, allowed_=None):
        per = []
        for c in cases:
            cand = candidates(c, n, kb, allowed_)
            f, js = features(kb, c, cand), judge_scores(kb, c, cand)
            x = {"js": js, "t": cand.index(c["diagnosis"]["id"]), "case_id": c["case_id"]}
            x["gp"], _ = score_all_pairs(sngp, f, kind="std")
            x["ens"], _ = score_all_pairs(ens, f, kind="std")
            for name, (m, kind) in KINDS.items():
                x[name] = score_all_pairs(models[m], f, kind=kind)[1]
            per.append(x)
        return per

    def truth(x):
        js = torch.tensor(x["js"])
        return torch.sign(js[:, None] - js[None, :])[iu[0], iu[1]]

    def uncertainty_table(per):
        """How well each uncertainty predicts its model's errors on these cases."""
        out = {}
        for name, (m, _) in KINDS.items():
            u = np.concatenate([x[name][iu[0], iu[1]].numpy() for x in per])
            ok = np.concatenate([(torch.sign(x[m][iu[0], iu[1]]) == truth(x)).numpy() for x in per])
            out[name] = {"deciles": deciles(u, ok), "auroc_error": auroc(u, ~ok), "pm_acc": float(ok.mean())}
        return out

    # 1. validation (training distribution): which scale of each model's std flags its errors
    val_unc = uncertainty_table(score(val, allowed))
    selected = {m: max((f"{m}_std", f"{m}_pref_std"), key=lambda k: val_unc[k]["auroc_error"] or 0.0)
                for m in ("gp", "ens")}
    per = score(test)
    unc = uncertainty_table(per)

    # 2. routing at each budget: per-case pair accuracy and top-1
    routers = {name: (m, name, "uncertainty") for name, (m, _) in KINDS.items()}
    routers.update({"random_gp": ("gp", "gp_std", "random"), "random_ens": ("ens", "ens_std", "random")})
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for frac in (0.0, *BUDGETS, 1.0):
        for name, (model, kind, mode) in routers.items():
            if frac in (0.0, 1.0) and not name.startswith("random"):
                continue
            draws = o["random_draws"] if mode == "random" and 0 < frac < 1 else 1
            acc, top1, judged = np.zeros(len(per)), np.zeros(len(per)), 0
            for _ in range(draws):
                for b0 in range(0, len(per), o["batch"]):
                    chunk = per[b0:b0 + o["batch"]]
                    masks = route_batch([x[kind] for x in chunk], int(round(frac * len(chunk) * len(iu[0]))),
                                        mode=mode, generator=gen)
                    for k, (x, sel) in enumerate(zip(chunk, masks)):
                        js = x["js"]
                        pf, nj, _ = routed_preferences(x[model], sel, lambda i, j, js=js: float(np.sign(js[i] - js[j])))
                        acc[b0 + k] += float((torch.sign(pf[iu[0], iu[1]]) == truth(x)).float().mean()) / draws
                        top1[b0 + k] += float(int(torch.argmax(preference_advantages(pf))) == x["t"]) / draws
                        judged += nj
            out[f"{frac:.2f}/{name}"] = {"pair_acc": acc.tolist(), "top1": top1.tolist(),
                                         "judged_frac": judged / draws / (len(per) * len(iu[0]))}
    return {"setting": setting, "seed": seed, "info": info, "n_train_cases": len(train), "n_test_cases": len(test),
            "n_train_pairs": int(len(y)), "case_ids": [x["case_id"] for x in per],
            "curves": {"sngp": curve_gp[::10] + [curve_gp[-1]], "ensemble": curve_ens[::10] + [curve_ens[-1]]},
            "uncertainty": unc, "val_uncertainty": {k: {"auroc_error": v["auroc_error"], "pm_acc": v["pm_acc"]}
                                                    for k, v in val_unc.items()},
            "selected": selected, "routing": out, "options": o}


def budget_curve(kb, *, seed: int = 100, chunk: int = 50, max_epochs: int = 600, **kw) -> dict:
    """The training budget: in-distribution validation pair accuracy of both preference models
    every ``chunk`` epochs (iid split of a tuning seed that is not a test seed)."""
    from medkit.rl import PairwiseEnsemble, PairwiseSNGP, score_all_pairs, train_pairwise

    o = {**DEFAULTS, **kw}
    n = o["n_candidates"]
    torch.manual_seed(seed)
    train, val, _, _ = split_cases(kb, "iid", seed, o["n_train"], 1, 0.0, o["n_val"])
    xi, xj, y = _pairs(kb, train, n, None)
    iu = torch.triu_indices(n, n, offset=1)
    vals = []
    for c in val:
        cand = candidates(c, n)
        js = torch.tensor(judge_scores(kb, c, cand))
        vals.append((features(kb, c, cand), torch.sign(js[:, None] - js[None, :])[iu[0], iu[1]]))
    curves = {}
    for name, model in (("sngp", PairwiseSNGP(xi.shape[1], hidden=o["hidden"], n_rff=o["n_rff"], seed=seed)),
                        ("ensemble", PairwiseEnsemble(xi.shape[1], hidden=o["hidden"], members=o["members"], seed=seed))):
        pts = []
        for e in range(chunk, max_epochs + 1, chunk):
            train_pairwise(model, xi, xj, y, epochs=chunk, lr=o["lr"])
            acc = np.mean([float((torch.sign(score_all_pairs(model, f)[0][iu[0], iu[1]]) == t).float().mean())
                           for f, t in vals])
            pts.append((e, float(acc)))
        curves[name] = pts
    return {"seed": seed, "curves": curves, "options": o}


# ----------------------------------------------------------------------------- cells and table
def choose_epochs(curve: dict) -> dict:
    """Training epochs from the budget curve: for each model the first checkpoint (>= 3 of them)
    at which validation pair accuracy gained < 0.005 over the last quarter of the epochs
    (:func:`medkit.viz.curves.plateau`); the larger of the two models' counts."""
    from medkit.viz.curves import plateau

    out = {}
    for name, pts in curve["curves"].items():
        e, a = [x for x, _ in pts], [y for _, y in pts]
        out[name] = next((e[k - 1] for k in range(3, len(e) + 1) if plateau(e[:k], a[:k], tol=0.005)["reached"]), e[-1])
    return {"epochs": max(out.values()), "per_model": out}


def run(b, kb, seeds, settings=SETTINGS) -> None:
    """Every missing cell: the budget curve (which sets the epochs), then seed by seed over the
    settings (seed 0 of every setting first). ``settings=("budget",)``: the budget curve only."""
    curve = b.cell("routing/budget_curve", lambda: budget_curve(kb), config={"part": "routing", **DEFAULTS})
    epochs = choose_epochs(curve)["epochs"]
    for seed in seeds:
        for setting in (s for s in settings if s != "budget"):
            b.cell(f"routing/{setting}/seed{seed}", lambda s=setting, sd=seed: routing_cell(kb, s, sd, epochs=epochs),
                   config={"part": "routing", **DEFAULTS, "epochs": epochs})


LABELS = {"gp_std": "GP std (logit, paper)", "gp_pref_std": "GP std (preference scale)",
          "gp_selected": "GP std (scale chosen on val)", "gp_margin": "SNGP mean-field margin (total)",
          "ens_std": "ensemble std (logit)", "ens_pref_std": "ensemble std (preference scale)",
          "ens_selected": "ensemble std (scale chosen on val)", "random_gp": "random (SNGP prefs)",
          "random_ens": "random (ensemble prefs)"}


def _with_selected(r: dict) -> dict:
    """Add the ``*_selected`` routers (the scale chosen on validation) to a cell's routing results."""
    out = dict(r["routing"])
    for key in list(out):
        frac, name = key.split("/")
        for m in ("gp", "ens"):
            if name == r["selected"][m]:
                out[f"{frac}/{m}_selected"] = out[key]
    return out


def assemble(b, out_dir) -> tuple[dict, list[str], dict]:
    """The decile table first, then routing vs random per budget; the target."""
    from bench.cells import target_ci
    from medkit.metrics.stats import paired_diff
    from medkit.viz.curves import plot_curves

    cells = {k: v for k, v in b.cells("routing/").items() if k != "routing/budget_curve"}
    lines, tables, targets = [], {}, {}
    curve = b.load("routing/budget_curve")
    if curve:
        png = plot_curves({f"{k} (val pair acc)": ([e for e, _ in v], [a for _, a in v]) for k, v in curve["curves"].items()},
                          out_dir / "routing_budget.png", xlabel="epochs", ylabel="in-distribution val pair accuracy",
                          title="Preference-model training budget (tuning seed 100, iid split)")
        ch = choose_epochs(curve)
        tables["routing_budget_curve"] = {**curve["curves"], "chosen": ch, "png": str(png.relative_to(out_dir.parents[1]))}
        lines.append(f"\nPreference-model budget: {ch['epochs']} epochs (plateau of in-distribution validation pair "
                     f"accuracy per model: {ch['per_model']}); curve {png.relative_to(out_dir.parents[1])}")
    by_setting: dict[str, list] = {}
    for r in cells.values():
        by_setting.setdefault(r["setting"], []).append(r)
    dec_series = {}
    for setting in SETTINGS:
        rs = sorted(by_setting.get(setting, []), key=lambda r: r["seed"])
        if not rs:
            continue
        seeds = [r["seed"] for r in rs]
        lines.append(f"\n### Routing, setting `{setting}`: preference-model accuracy by uncertainty decile "
                     f"(test pairs pooled over {len(rs)} seeds; decile 1 = least uncertain)")
        lines.append("| uncertainty | PM acc | AUROC of PM error (mean +- sd) | " +
                     " | ".join(f"d{k}" for k in range(1, 11)) + " |")
        lines.append("|---|---|---|" + "---|" * 10)
        dec_tab = {}
        for kind in KINDS:
            n = np.zeros(10)
            c = np.zeros(10)
            for r in rs:
                for d in r["uncertainty"][kind]["deciles"]:
                    n[d["decile"] - 1] += d["n"]
                    c[d["decile"] - 1] += d["correct"]
            au = [r["uncertainty"][kind]["auroc_error"] for r in rs]
            acc = c / np.maximum(n, 1)
            pm = float(np.mean([r["uncertainty"][kind]["pm_acc"] for r in rs]))
            dec_tab[kind] = {"acc_by_decile": acc.tolist(), "n_by_decile": n.astype(int).tolist(),
                             "auroc_error_mean": float(np.mean(au)), "auroc_error_sd": float(np.std(au)), "pm_acc": pm}
            lines.append(f"| {LABELS[kind]} | {pm:.3f} | {np.mean(au):.3f} +- {np.std(au):.3f} | " +
                         " | ".join(f"{a:.2f}" for a in acc) + " |")
            if setting == "conditions":
                dec_series[LABELS[kind]] = (list(range(1, 11)), acc.tolist())
        sel = {m: [r["selected"][m] for r in rs] for m in ("gp", "ens")}
        counts = {m: {k: v.count(k) for k in sorted(set(v))} for m, v in sel.items()}
        lines.append(f"\nStd scale chosen on in-distribution validation (seeds per choice): GP {counts['gp']}, "
                     f"ensemble {counts['ens']}")
        # routing vs random
        routed = [_with_selected(r) for r in rs]
        lines.append(f"\n### Routing, setting `{setting}`: all pairs scored against the judge; {len(rs)} paired seeds, "
                     f"{rs[0]['n_test_cases']} test cases each; diff = router - random on the same model's "
                     "preferences, 95 % bootstrap CI over seeds")
        lines.append("| budget | router | judged % | pair acc | top-1 | diff pair acc [95 % CI] | diff top-1 [95 % CI] |")
        lines.append("|---|---|---|---|---|---|---|")
        rows = []
        for frac in ("0.00", *[f"{x:.2f}" for x in BUDGETS], "1.00"):
            names = (["random_gp", "random_ens"] if frac in ("0.00", "1.00") else
                     ["gp_std", "gp_pref_std", "gp_selected", "gp_margin", "random_gp", "ens_std", "ens_pref_std",
                      "ens_selected", "random_ens"])
            for name in names:
                key = f"{frac}/{name}"
                acc = [float(np.mean(x[key]["pair_acc"])) for x in routed]
                top = [float(np.mean(x[key]["top1"])) for x in routed]
                jf = float(np.mean([x[key]["judged_frac"] for x in routed]))
                row = {"budget": float(frac), "router": name, "judged_frac": jf, "pair_acc": float(np.mean(acc)),
                       "top1": float(np.mean(top)), "pair_acc_per_seed": acc, "top1_per_seed": top}
                ctl = "random_ens" if name.startswith("ens") else "random_gp"
                diff_txt = ["", ""]
                if frac not in ("0.00", "1.00") and not name.startswith("random"):
                    for k, metric in enumerate(("pair_acc", "top1")):
                        a = [float(np.mean(x[key][metric])) for x in routed]
                        bb = [float(np.mean(x[f"{frac}/{ctl}"][metric])) for x in routed]
                        d = paired_diff(a, bb, units=seeds)
                        row[f"diff_{metric}"] = d
                        diff_txt[k] = f"{d['mean']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"
                    if setting == "conditions" and frac == "0.25" and name in ("gp_selected", "gp_std", "ens_selected"):
                        targets.setdefault("_routing", {})[name] = target_ci(row["diff_pair_acc"])
                rows.append(row)
                lines.append(f"| {float(frac) * 100:.0f}% | {LABELS[name]} | {jf * 100:.1f} | {row['pair_acc']:.3f} | "
                             f"{row['top1']:.3f} | {diff_txt[0]} | {diff_txt[1]} |")
        tables[f"routing_{setting}"] = {"deciles": dec_tab, "routing": rows, "seeds": seeds, "selected": sel,
                                        "info": [r["info"] for r in rs]}
    if dec_series:
        png = plot_curves(dec_series, out_dir / "routing_deciles.png", xlabel="uncertainty decile (1 = least)",
                          ylabel="preference-model pair accuracy",
                          title="Held-out conditions: PM accuracy by uncertainty decile (all seeds)")
        tables["routing_conditions"]["deciles_png"] = str(png.relative_to(out_dir.parents[1]))
    r = targets.pop("_routing", {})
    if "gp_selected" in r:
        targets["routing_vs_random_25pct"] = {
            **r["gp_selected"], "what": "held-out conditions, 25 % judge budget: pair accuracy of GP-std routing "
            "(std scale chosen per seed on in-distribution validation) minus random routing, CI over seeds",
            "gp_std_logit_paper": r.get("gp_std"), "ensemble_selected": r.get("ens_selected")}
    return tables, lines, targets
