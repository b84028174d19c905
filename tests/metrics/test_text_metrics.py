"""NLG metrics: hand-worked values, and equality with pycocoevalcap where it is installed."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest

from medkit.metrics import text as T
from medkit.metrics.text import bleu, cider_d, meteor_approx, nlg_metrics, ptb_tokenize, rouge_l

H1, R1 = "the heart is normal".split(), "the heart size is normal".split()
H2, R2 = "no effusion".split(), "no effusion".split()


def test_bleu_hand_computed_one_case():
    # hyp "the heart is normal" (c=4) vs ref "the heart size is normal" (r=5)
    # 1-grams: the heart is normal all in ref -> 4/4
    # 2-grams: "the heart" yes, "heart is" no, "is normal" yes -> 2/3
    # 3-grams: "the heart is", "heart is normal" -> 0/2 ; 4-grams 0/1
    # BP = exp(1 - 5/4) = exp(-0.25)
    b, _ = bleu([[R1]], [H1])
    bp = math.exp(-0.25)
    assert b[0] == pytest.approx(1.0 * bp, rel=1e-9)
    assert b[1] == pytest.approx(math.sqrt(2 / 3) * bp, rel=1e-9)
    assert b[2] < 1e-4 and b[3] < 1e-4  # tiny/small smoothing, not zero


def test_bleu_is_corpus_level():
    # Counts are summed before the ratio: 1-grams (4+2)/(4+2), 2-grams (2+1)/(3+1) = 3/4,
    # c = 6, r = 7, BP = exp(1 - 7/6).
    b, per_case = bleu([[R1], [R2]], [H1, H2])
    bp = math.exp(1 - 7 / 6)
    assert b[0] == pytest.approx(bp, rel=1e-9)
    assert b[1] == pytest.approx(math.sqrt(3 / 4) * bp, rel=1e-9)
    assert per_case[1][0] == pytest.approx(math.sqrt(2 / 3) * math.exp(-0.25), rel=1e-9)
    assert b[1] != pytest.approx(np.mean([per_case[1][0], per_case[1][1]]))


def test_bleu_closest_reference_length():
    # refs of length 5 and 3 for a 4-word hypothesis: |5-4| = |3-4|, the tie goes to the shorter (3): no BP
    b, _ = bleu([[R1, "the heart normal".split()]], [H1])
    assert b[0] == pytest.approx(1.0, rel=1e-9)


def test_rouge_l_hand_computed():
    # LCS("the heart is normal", "the heart size is normal") = 4; P = 4/4, R = 4/5
    # F = (1 + 1.2^2) P R / (R + 1.2^2 P) = 2.44 * 0.8 / (0.8 + 1.44) = 0.871428...
    s, per = rouge_l([[R1]], [H1])
    assert s == pytest.approx(2.44 * 0.8 / 2.24, rel=1e-12)
    assert rouge_l([[R1]], [["x"]])[0] == 0.0


def test_cider_d_two_image_corpus():
    # refs "a b" and "a c": ref_len = log 2; "a" is in both refs -> idf 0; b, c, "a b", "a c" -> idf log 2;
    # "d", "a d" are in no ref -> df clipped to 1 -> idf log 2.
    # image 1, hyp "a b" == ref: 1-gram and 2-gram cosines are 1, 3/4-grams 0 -> mean 0.5, x10 = 5.
    # image 2, hyp "a d" vs "a c": the only weighted n-grams differ -> 0.   Corpus = (5 + 0) / 2.
    s, per = cider_d([[["a", "b"]], [["a", "c"]]], [["a", "b"], ["a", "d"]])
    assert per == pytest.approx([5.0, 0.0])
    assert s == pytest.approx(2.5)


def test_cider_d_clips_repeated_ngrams_and_penalises_length():
    refs = [[["a", "b", "c"]], [["d", "e", "f"]]]
    one, _ = cider_d(refs, [["a", "b", "c"], ["d", "e", "f"]])
    rep, _ = cider_d(refs, [["a", "b", "c", "a", "b", "c"], ["d", "e", "f"]])
    assert rep < one


def test_meteor_approx_hand_computed():
    # hyp "heart normal" vs ref "the heart is normal": 2 exact content-word matches, 2 chunks.
    # P = (0.75*2)/(0.75*2) = 1; R = (0.75*2)/(0.75*2 + 0.25*2) = 0.75
    # Fmean = P R / (0.85 P + 0.15 R) = 0.75 / 0.9625; Pen = 0.6 * (2/2)^0.2 = 0.6
    s, _ = meteor_approx([["the heart is normal".split()]], ["heart normal".split()])
    assert s == pytest.approx(0.75 / 0.9625 * 0.4, rel=1e-9)
    # identical sentences: one chunk covering everything -> no penalty (as Meteor 1.5)
    assert meteor_approx([[R1]], [R1])[0] == pytest.approx(1.0)
    assert meteor_approx([[R1]], [["zzz"]])[0] == 0.0


def test_ptb_tokenize():
    assert ptb_tokenize("The heart isn't enlarged. No effusion, (left).") == [
        "the", "heart", "is", "n't", "enlarged", "no", "effusion", "left"]
    assert ptb_tokenize("Cannot exclude a 1.5 cm nodule; x-ray...") == [
        "can", "not", "exclude", "a", "1.5", "cm", "nodule", "x-ray"]


def test_nlg_metrics_keys_and_errors():
    out = nlg_metrics({"a": "the heart is normal .", "b": ["no effusion ."]},
                      {"a": "the heart is normal .", "b": "no effusion ."}, per_case=True, meteor="approx")
    assert set(out) >= {"BLEU_1", "BLEU_4", "METEOR", "ROUGE_L", "CIDEr", "per_case", "METEOR_impl"}
    assert out["METEOR_impl"].startswith("medkit-approx") and "not METEOR 1.5" in out["METEOR_impl"]
    none = nlg_metrics({"a": "x y"}, {"a": "x y"}, meteor="none")
    assert none["METEOR"] is None and none["METEOR_impl"] == "not computed"
    with pytest.raises(ValueError, match="meteor"):
        nlg_metrics({"a": "x"}, {"a": "x"}, meteor="auto")
    assert out["BLEU_1"] == pytest.approx(1.0) and out["ROUGE_L"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same case ids"):
        nlg_metrics({"a": "x"}, {"b": "x"})
    with pytest.raises(ValueError, match="tokenize"):
        nlg_metrics({"a": "x"}, {"a": "x"}, tokenize="bpe")


def test_meteor_15_without_java_is_a_clear_error_never_a_substitute(monkeypatch):
    monkeypatch.setattr(T, "_METEOR", None)
    monkeypatch.setattr(T.shutil, "which", lambda name: None)
    with pytest.raises(T.MeteorUnavailable, match="no `java` is on PATH.*meteor='approx'"):
        nlg_metrics({"a": "the heart is normal ."}, {"a": "the heart is normal ."})
    monkeypatch.setattr(T.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(T.MeteorUnavailable, match="pip install --no-deps pycocoevalcap"):
        T.meteor_jar()


def _report_pairs(n=30):
    from medkit.synth.cxr_reports import sample_findings, write_report

    refs, hyps = {}, {}
    for i in range(n):
        r1, r2 = np.random.default_rng([3, i]), np.random.default_rng([4, i])
        a = write_report(sample_findings(r1, model="independent"), r1)
        b = write_report(sample_findings(r2, model="independent"), r2)
        refs[str(i)] = [a["findings"] + " " + a["impression"]]
        hyps[str(i)] = [b["findings"] + " " + b["impression"]]
    return refs, hyps


def test_equal_to_pycocoevalcap_bleu_rouge_cider():
    pytest.importorskip("pycocoevalcap", reason="pycocoevalcap not installed (pip install pycocoevalcap)")
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    refs, hyps = _report_pairs()
    # pre-tokenised the same way for both (their scorers split on spaces)
    rt = {k: [" ".join(ptb_tokenize(v[0]))] for k, v in refs.items()}
    ht = {k: [" ".join(ptb_tokenize(v[0]))] for k, v in hyps.items()}
    ours = nlg_metrics({k: v[0] for k, v in rt.items()}, {k: v[0] for k, v in ht.items()}, tokenize="none")
    b, _ = Bleu(4).compute_score(rt, ht, verbose=0)
    for k in range(4):
        assert ours[f"BLEU_{k + 1}"] == pytest.approx(b[k], abs=1e-12)
    assert ours["ROUGE_L"] == pytest.approx(Rouge().compute_score(rt, ht)[0], abs=1e-12)
    assert ours["CIDEr"] == pytest.approx(Cider().compute_score(rt, ht)[0], abs=1e-9)


needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="Java absent: pycocoevalcap's PTB tokenizer "
                                "and METEOR jar need it")


@pytest.mark.slow  # ~20-40 s: starts three JVMs
@needs_java
def test_ptb_tokenizer_meteor_15_and_the_approximation_against_java():
    pytest.importorskip("pycocoevalcap", reason="pycocoevalcap not installed")
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    refs, hyps = _report_pairs()
    tk = PTBTokenizer()
    jr = tk.tokenize({k: [{"caption": c} for c in v] for k, v in refs.items()})
    jh = tk.tokenize({k: [{"caption": c} for c in v] for k, v in hyps.items()})
    for k in refs:
        assert jr[k][0].split() == ptb_tokenize(refs[k][0])
    theirs, theirs_case = Meteor().compute_score(jr, jh)
    # medkit's jar driver on the same tokens: METEOR 1.5 itself, so equal to pycocoevalcap's
    jar = nlg_metrics({k: v[0] for k, v in refs.items()}, {k: v[0] for k, v in hyps.items()}, per_case=True)
    assert jar["METEOR_impl"] == "meteor-1.5.jar"
    assert jar["METEOR"] == pytest.approx(theirs, abs=1e-9)
    assert [jar["per_case"][k]["METEOR"] for k in sorted(refs)] == pytest.approx(
        [theirs_case[list(jr).index(k)] for k in sorted(refs)], abs=1e-9)
    # Measured: 0.1170 vs the jar's 0.1210 on these pairs (no synonym/paraphrase modules here).
    approx = nlg_metrics({k: v[0] for k, v in refs.items()}, {k: v[0] for k, v in hyps.items()}, meteor="approx")
    assert approx["METEOR"] == pytest.approx(theirs, abs=0.02) and approx["METEOR"] != jar["METEOR"]
