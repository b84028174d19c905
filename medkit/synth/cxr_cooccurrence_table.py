"""The generator's co-occurrence table beside MIMIC-CXR's (the synth-cxr data card's table).

    python -m medkit.synth.cxr_cooccurrence_table

A module of its own because it draws studies with :mod:`.cxr`, which itself imports
:mod:`.cxr_cooccurrence` (keeping it there would close an import circle).
"""

from __future__ import annotations

from .cxr import CXRConfig, draw_study
from .cxr_cooccurrence import cooccurrence, mimic_rates

PAIRS = (("Cardiomegaly", "Edema"), ("Cardiomegaly", "Pleural Effusion"), ("Edema", "Pleural Effusion"),
         ("Consolidation", "Pneumonia"), ("Support Devices", "Pleural Effusion"), ("Support Devices", "Atelectasis"),
         ("Support Devices", "Edema"), ("Pleural Effusion", "Atelectasis"), ("Support Devices", "Cardiomegaly"),
         ("Lung Lesion", "Support Devices"))


def report(n: int = 20000, seed: int = 0) -> str:
    """The generator's label rates beside MIMIC-CXR's and its main pairwise lifts (the data card's table):
    ``python -m medkit.synth.cxr_cooccurrence_table``."""
    cfg = CXRConfig(seed=seed)
    c = cooccurrence([draw_study(cfg, i)["labels"] for i in range(n)])
    want = mimic_rates()
    lines = [f"generator (label_model=mimic, seed {seed}, {n} studies) vs MIMIC-CXR-JPG v2 (227,827 studies), "
             "positive labels", f"{'observation':28s} {'generator':>9s} {'MIMIC-CXR':>9s}"]
    lines += [f"{o:28s} {r:9.3f} {want[o]:9.3f}" for o, r in zip(c["observations"], c["rate"])]
    i = {o: k for k, o in enumerate(c["observations"])}
    lines.append(f"{'pair (A, B)':45s} {'P(B|A)':>7s} {'lift':>6s}")
    lines += [f"{a + ', ' + b:45s} {c['conditional'][i[a]][i[b]]:7.3f} {c['lift'][i[a]][i[b]]:6.2f}" for a, b in PAIRS]
    return "\n".join(lines)


if __name__ == "__main__":
    print(report())
