"""Natural-language generation metrics with pycocoevalcap's definitions.

Every radiology report-generation paper (R2Gen, R2GenCMN, PromptMRG, CoFE)
reports BLEU-1..4, METEOR, ROUGE-L and CIDEr from ``pycocoevalcap`` (the COCO
caption evaluation code). BLEU, ROUGE-L and CIDEr are reproduced here in pure
Python (equal to pycocoevalcap's to 1e-9, tests/metrics). METEOR is the real
METEOR 1.5 jar by default (:func:`meteor_15`, the ``meteor-1.5.jar`` that
pycocoevalcap ships, run with Java exactly as pycocoevalcap runs it); the
pure-Python approximation (:func:`meteor_approx`) is used only when asked for
by name, and results say which one they hold (``METEOR_impl``):

- **BLEU-n** (Papineni et al. 2002) as ``pycocoevalcap.bleu``: *corpus* level
  (clipped n-gram counts and lengths summed over all cases before the ratio),
  ``option="closest"`` reference length, ``tiny=1e-15`` / ``small=1e-9``
  smoothing constants, brevity penalty ``exp(1 - r/c)`` when ``c < r``.
- **ROUGE-L** (Lin 2004) as ``pycocoevalcap.rouge``: per case, LCS precision
  and recall against each reference, the max of each, F with ``beta = 1.2``;
  the corpus score is the mean over cases.
- **CIDEr** as ``pycocoevalcap.cider`` (which is CIDEr-D, Vedantam et al. 2015):
  TF-IDF n-gram vectors (n = 1..4) with document frequencies over the corpus's
  references, ``log(#cases)`` as the IDF numerator, hypothesis counts clipped
  at the reference's (``min(v_h, v_r) * v_r``), Gaussian length penalty
  ``sigma = 6``, times 10. pycocoevalcap's length is the number of *bigrams*
  (``if n == 1`` on a 0-based index); kept, since it changes the score.
- **METEOR** 1.5 (Denkowski & Lavie 2014) is a Java program. :func:`meteor_15`
  runs it (``java -jar -Xmx2G meteor-1.5.jar - - -stdio -l en -norm``, one
  JVM per process, kept open; ``SCORE`` lines per case, then one ``EVAL`` line
  for the corpus score, as ``pycocoevalcap.meteor``). Without Java it raises
  :class:`MeteorUnavailable`; nothing is substituted. :func:`meteor_approx` is a
  re-implementation of its scoring with the English parameters
  (``alpha 0.85, beta 0.2, gamma 0.6, delta 0.75``; exact matches weight 1.0,
  stem matches 0.6) and corpus aggregation from summed statistics like the
  jar's ``EVAL`` line. **Differences**: no WordNet synonym and no paraphrase
  modules (the jar's weights 0.8 / 0.6), a light suffix stemmer instead of
  Snowball, a short function-word list instead of Meteor's, and a greedy
  aligner instead of Meteor's beam search. It reads lower than the jar when
  synonyms or paraphrases would have matched (0.117 vs the jar's 0.121 on the
  test pairs in tests/metrics, which compare both where Java is present).
- **Tokenisation**: ``tokenize="ptb"`` approximates pycocoevalcap's
  ``PTBTokenizer`` (Stanford PTB, ``-lowerCase``, then its punctuation tokens
  removed): lower-case, punctuation split off, ``n't``/``'s`` style clitics
  split, PTB's punctuation list dropped. Abbreviations with inner periods
  ("e.g.") may split differently from Stanford's. ``tokenize="none"`` splits on
  whitespace only -- what R2Gen-family code does on ``clean_report`` text (it
  never calls the PTB tokenizer); pass that to compare with those papers.

Inputs are ``{case_id: [reference strings]}`` and ``{case_id: hypothesis}``.
"""

from __future__ import annotations

import atexit
import importlib.util
import math
import re
import shutil
import subprocess
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

# pycocoevalcap.tokenizer.ptbtokenizer.PUNCTUATIONS (lower-cased forms of the brackets too).
PTB_PUNCTUATION = frozenset(["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", "-lrb-", "-rrb-",
                             "-lcb-", "-rcb-", ".", "?", "!", ",", ":", "-", "--", "...", ";",
                             "(", ")", "[", "]", "{", "}", '"'])

_CLITIC = re.compile(r"(\w)(n't|'s|'re|'ve|'ll|'d|'m)\b")
_CANNOT = re.compile(r"\bcannot\b")
_SPLIT = re.compile(r"(\.\.\.|--|[,;:?!()\[\]{}\"])")
_FINAL_PERIOD = re.compile(r"(?<=[^\s.])\.(?=\s|$)")


def ptb_tokenize(text: str) -> list[str]:
    """Approximate Stanford PTBTokenizer ``-lowerCase`` + pycocoevalcap's punctuation removal.

    >>> ptb_tokenize("The heart isn't enlarged. No effusion, (left).")
    ['the', 'heart', 'is', "n't", 'enlarged', 'no', 'effusion', 'left']
    """
    t = text.replace("\n", " ").lower()
    t = _SPLIT.sub(r" \1 ", t)
    t = _FINAL_PERIOD.sub(" . ", t)
    t = _CLITIC.sub(r"\1 \2", t)
    t = _CANNOT.sub("can not", t)  # Stanford PTB splits "cannot"
    return [w for w in t.split() if w not in PTB_PUNCTUATION]


def _tokens(text: str, tokenize: str) -> list[str]:
    if tokenize == "ptb":
        return ptb_tokenize(text)
    if tokenize == "none":
        return text.split()
    raise ValueError(f"tokenize must be 'ptb' or 'none', got {tokenize!r}")


def _prepare(refs: Mapping, hyps: Mapping, tokenize: str) -> tuple[list, list[list[list[str]]], list[list[str]]]:
    if set(refs) != set(hyps):
        missing = sorted(set(refs) ^ set(hyps), key=str)[:5]
        raise ValueError(f"references and hypotheses must have the same case ids; differ at {missing}")
    if not refs:
        raise ValueError("no cases to score")
    ids = sorted(refs, key=str)
    r = []
    for i in ids:
        rr = [refs[i]] if isinstance(refs[i], str) else list(refs[i])
        if not rr:
            raise ValueError(f"case {i!r} has no reference")
        r.append([_tokens(x, tokenize) for x in rr])
    h = [_tokens(hyps[i] if isinstance(hyps[i], str) else _one(hyps[i], i), tokenize) for i in ids]
    return ids, r, h


def _one(h: Sequence[str], i) -> str:
    if len(h) != 1:
        raise ValueError(f"case {i!r}: exactly one hypothesis expected, got {len(h)}")
    return h[0]


def _ngrams(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


# --------------------------------------------------------------------------- BLEU

def bleu(refs: list[list[list[str]]], hyps: list[list[str]], n: int = 4) -> tuple[list[float], list[list[float]]]:
    """Corpus BLEU-1..n and per-case BLEU as pycocoevalcap's ``BleuScorer(option="closest")``.

    Args:
        refs: per case, its tokenised references.
        hyps: per case, the tokenised hypothesis.

    Returns:
        ``([BLEU-1..n corpus], [[per-case BLEU-k] for k])``.
    """
    tiny, small = 1e-15, 1e-9
    guess, correct = [0] * n, [0] * n
    testlen_t = reflen_t = 0
    per_case: list[list[float]] = [[] for _ in range(n)]
    for rs, h in zip(refs, hyps):
        maxc: dict = {}
        for r in rs:
            for k in range(1, n + 1):
                for g, c in _ngrams(r, k).items():
                    maxc[g] = max(maxc.get(g, 0), c)
        testlen = len(h)
        reflen = min((abs(len(r) - testlen), len(r)) for r in rs)[1]  # "closest", ties to the shorter
        g_i = [max(0, testlen - k + 1) for k in range(1, n + 1)]
        c_i = [0] * n
        for k in range(1, n + 1):
            for g, c in _ngrams(h, k).items():
                c_i[k - 1] += min(maxc.get(g, 0), c)
        testlen_t += testlen
        reflen_t += reflen
        b = 1.0
        for k in range(n):
            guess[k] += g_i[k]
            correct[k] += c_i[k]
            b *= (c_i[k] + tiny) / (g_i[k] + small)
            per_case[k].append(b ** (1.0 / (k + 1)))
        ratio = (testlen + tiny) / (reflen + small)
        if ratio < 1:
            for k in range(n):
                per_case[k][-1] *= math.exp(1 - 1 / ratio)
    out, b = [], 1.0
    for k in range(n):
        b *= (correct[k] + tiny) / (guess[k] + small)
        out.append(b ** (1.0 / (k + 1)))
    ratio = (testlen_t + tiny) / (reflen_t + small)
    if ratio < 1:
        out = [x * math.exp(1 - 1 / ratio) for x in out]
    return out, per_case


# --------------------------------------------------------------------------- ROUGE-L

def _lcs(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(refs: list[list[list[str]]], hyps: list[list[str]], beta: float = 1.2) -> tuple[float, list[float]]:
    """Mean ROUGE-L F (``beta = 1.2``) and per-case scores, as ``pycocoevalcap.rouge.Rouge``."""
    scores = []
    for rs, h in zip(refs, hyps):
        precs, recs = [], []
        for r in rs:
            lcs = _lcs(r, h)
            precs.append(lcs / len(h) if h else 0.0)
            recs.append(lcs / len(r) if r else 0.0)
        p, r_ = max(precs), max(recs)
        scores.append(((1 + beta**2) * p * r_) / (r_ + beta**2 * p) if p != 0 and r_ != 0 else 0.0)
    return sum(scores) / len(scores), scores


# --------------------------------------------------------------------------- CIDEr-D

def cider_d(refs: list[list[list[str]]], hyps: list[list[str]], n: int = 4, sigma: float = 6.0) -> tuple[float, list[float]]:
    """Corpus CIDEr (pycocoevalcap's, i.e. CIDEr-D) and per-case scores.

    IDF is from the references of *this* corpus (``df`` = number of cases whose
    references contain the n-gram; ``idf = log(#cases) - log(max(1, df))``).
    """
    def counts(words):
        c: Counter = Counter()
        for k in range(1, n + 1):
            c.update(_ngrams(words, k))
        return c

    crefs = [[counts(r) for r in rs] for rs in refs]
    ctest = [counts(h) for h in hyps]
    df: dict = defaultdict(float)
    for rs in crefs:
        for g in {g for r in rs for g in r}:
            df[g] += 1
    ref_len = math.log(float(len(crefs)))

    def vec(cnts):
        v = [defaultdict(float) for _ in range(n)]
        norm = [0.0] * n
        length = 0
        for g, tf in cnts.items():
            k = len(g) - 1
            v[k][g] = float(tf) * (ref_len - math.log(max(1.0, df[g])))
            norm[k] += v[k][g] ** 2
            if k == 1:  # pycocoevalcap counts bigrams as the "length" (kept on purpose)
                length += tf
        return v, [math.sqrt(x) for x in norm], length

    scores = []
    for t, rs in zip(ctest, crefs):
        vh, nh, lh = vec(t)
        acc = [0.0] * n
        for r in rs:
            vr, nr, lr = vec(r)
            delta = float(lh - lr)
            for k in range(n):
                val = sum(min(c, vr[k].get(g, 0.0)) * vr[k].get(g, 0.0) for g, c in vh[k].items())
                if nh[k] != 0 and nr[k] != 0:
                    val /= nh[k] * nr[k]
                acc[k] += val * math.exp(-(delta**2) / (2 * sigma**2))
        scores.append(sum(acc) / n / len(rs) * 10.0)
    return sum(scores) / len(scores), scores


# --------------------------------------------------------------------------- METEOR

# A short English function-word list (Meteor 1.5 ships a longer one; see module doc).
FUNCTION_WORDS = frozenset("""
a an the and or but nor so yet of in on at by for with without from to into onto upon over under
above below between among through during before after about against within along across behind
beyond near off out up down is are was were be been being am has have had do does did will would
shall should can could may might must this that these those it its they them their there here
which who whom whose what when where why how as than then not no nor too very also any some each
every all both either neither such only own same other another i we you he she his her our your
""".split()) | PTB_PUNCTUATION  # punctuation tokens weigh as function words


def light_stem(w: str) -> str:
    """A small suffix stripper (not Snowball): ``effusions -> effusion``, ``enlarged -> enlarg``."""
    for suf in ("ations", "ation", "ness", "ments", "ment", "ingly", "ing", "edly", "ed", "ies", "es", "ly", "s"):
        if w.endswith(suf) and len(w) - len(suf) >= 3:
            return w[: -len(suf)] + ("y" if suf == "ies" else "")
    return w


def _align(h: list[str], r: list[str]) -> list[tuple[int, int, float]]:
    """Greedy two-stage alignment (exact, then stem); prefers extending the current chunk."""
    used_h, used_r, pairs = set(), set(), []
    for key, weight in ((lambda w: w, 1.0), (light_stem, 0.6)):
        rk = [key(w) for w in r]
        last = -2
        for i, w in enumerate(h):
            if i in used_h:
                continue
            kw = key(w)
            cands = [j for j, x in enumerate(rk) if x == kw and j not in used_r]
            if not cands:
                continue
            j = last + 1 if last + 1 in cands else min(cands, key=lambda j: abs(j - (last + 1)))
            used_h.add(i)
            used_r.add(j)
            pairs.append((i, j, weight))
            last = j
    return sorted(pairs)


def _meteor_stats(h: list[str], r: list[str], delta: float) -> dict:
    pairs = _align(h, r)
    def wlen(ws):
        return sum(delta if w not in FUNCTION_WORDS else 1 - delta for w in ws)
    mh = sum(wt * (delta if h[i] not in FUNCTION_WORDS else 1 - delta) for i, _, wt in pairs)
    mr = sum(wt * (delta if r[j] not in FUNCTION_WORDS else 1 - delta) for _, j, wt in pairs)
    chunks = 0
    prev = None
    for i, j, _ in pairs:
        if prev is None or i != prev[0] + 1 or j != prev[1] + 1:
            chunks += 1
        prev = (i, j)
    identical = len(pairs) == len(h) == len(r) and chunks == 1
    return {"mh": mh, "mr": mr, "lh": wlen(h), "lr": wlen(r), "m": len(pairs), "chunks": chunks,
            "identical": identical}


def _meteor_from(s: dict, alpha: float, beta: float, gamma: float) -> float:
    if s["m"] == 0 or s["lh"] == 0 or s["lr"] == 0:
        return 0.0
    p, r = s["mh"] / s["lh"], s["mr"] / s["lr"]
    if p == 0 or r == 0:
        return 0.0
    fmean = p * r / (alpha * p + (1 - alpha) * r)
    # Meteor 1.5: an exact, complete, single-chunk match has no fragmentation penalty.
    frag = 0.0 if s.get("identical") else s["chunks"] / s["m"]
    pen = gamma * frag**beta
    return fmean * (1 - pen)


def meteor_approx(refs: list[list[list[str]]], hyps: list[list[str]], *, alpha: float = 0.85, beta: float = 0.2,
                  gamma: float = 0.6, delta: float = 0.75) -> tuple[float, list[float]]:
    """medkit's pure-Python METEOR approximation (not METEOR 1.5; see the module doc): corpus score
    from summed statistics of each case's best reference, and per-case scores."""
    total = {"mh": 0.0, "mr": 0.0, "lh": 0.0, "lr": 0.0, "m": 0, "chunks": 0}
    identical = True
    scores = []
    for rs, h in zip(refs, hyps):
        best, best_s = -1.0, None
        for r in rs:
            s = _meteor_stats(h, r, delta)
            sc = _meteor_from(s, alpha, beta, gamma)
            if sc > best:
                best, best_s = sc, s
        scores.append(best)
        identical &= best_s["identical"]
        for k in total:
            total[k] += best_s[k]
    return _meteor_from({**total, "identical": identical}, alpha, beta, gamma), scores


# --------------------------------------------------------------------------- METEOR 1.5 (the jar)

METEOR_JAR_NAME = "meteor-1.5.jar"
METEOR_IMPLS = {"jar": "meteor-1.5.jar", "approx": "medkit-approx (not METEOR 1.5)"}


class MeteorUnavailable(RuntimeError):
    """METEOR 1.5 cannot run here (no Java, or no jar); the message says what to install."""


def meteor_jar() -> Path:
    """Path of ``meteor-1.5.jar`` inside the installed ``pycocoevalcap`` package.

    Raises:
        MeteorUnavailable: pycocoevalcap is not installed or ships no jar.
    """
    spec = importlib.util.find_spec("pycocoevalcap")
    locs = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locs:
        jar = Path(loc) / "meteor" / METEOR_JAR_NAME
        if jar.is_file():
            return jar
    raise MeteorUnavailable("METEOR 1.5 needs the meteor-1.5.jar that pycocoevalcap ships: "
                            "pip install --no-deps pycocoevalcap (or score with meteor='approx', "
                            "medkit's named approximation, or meteor='none')")


def java_executable() -> str:
    """The ``java`` on PATH. Raises :class:`MeteorUnavailable` naming what to install."""
    java = shutil.which("java")
    if java is None:
        raise MeteorUnavailable("METEOR 1.5 is a Java program and no `java` is on PATH: install a Java runtime "
                                "(e.g. apt-get install default-jre-headless), or score with meteor='approx' "
                                "(medkit's approximation, reported as such) or meteor='none'")
    return java


class Meteor15:
    """A running METEOR 1.5 process (``-stdio`` mode), as ``pycocoevalcap.meteor.Meteor`` drives it.

    Starting the JVM and loading the paraphrase table takes ~5-15 s, so :func:`meteor_15` keeps
    one per process. ``score`` writes one ``SCORE`` line per case (reading back its statistics)
    and one ``EVAL`` line over all of them, which returns the per-case scores and then the
    corpus score (from summed statistics, not the mean of the cases).
    """

    def __init__(self):
        jar = meteor_jar()
        self.proc = subprocess.Popen([java_executable(), "-jar", "-Xmx2G", jar.name, "-", "-", "-stdio", "-l", "en",
                                      "-norm"], cwd=jar.parent, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)

    def _line(self, text: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((text + "\n").encode())
        self.proc.stdin.flush()
        out = self.proc.stdout.readline().decode().strip()
        if not out:
            err = self.proc.stderr.read().decode(errors="replace")[-500:] if self.proc.poll() is not None else ""
            raise MeteorUnavailable(f"meteor-1.5.jar stopped answering{': ' + err if err else ''}")
        return out

    def score(self, refs: list[list[str]], hyps: list[str]) -> tuple[float, list[float]]:
        """Corpus METEOR 1.5 and per-case scores of ``hyps[i]`` against ``refs[i]`` (strings)."""
        def clean(t: str) -> str:
            return " ".join(t.replace("|||", " ").split())
        stats = [self._line(" ||| ".join(["SCORE", *[clean(r) for r in rs], clean(h)])) for rs, h in zip(refs, hyps)]
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((" ||| ".join(["EVAL", *stats]) + "\n").encode())
        self.proc.stdin.flush()
        per_case = [float(self.proc.stdout.readline().strip()) for _ in stats]
        return float(self.proc.stdout.readline().strip()), per_case

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.kill()
            self.proc.wait()


_METEOR: Meteor15 | None = None


def meteor_15(refs: list[list[list[str]]], hyps: list[list[str]]) -> tuple[float, list[float]]:
    """Corpus METEOR 1.5 and per-case scores from the jar, on tokenised references / hypotheses
    (tokens are joined by spaces; the jar's ``-norm`` lower-cases and tokenises punctuation itself).

    Raises:
        MeteorUnavailable: no Java or no jar (nothing is substituted).
    """
    global _METEOR
    if _METEOR is None or _METEOR.proc.poll() is not None:
        _METEOR = Meteor15()
        atexit.register(_METEOR.close)
    return _METEOR.score([[" ".join(r) for r in rs] for rs in refs], [" ".join(h) for h in hyps])


# --------------------------------------------------------------------------- all together

METRIC_NAMES = ("BLEU_1", "BLEU_2", "BLEU_3", "BLEU_4", "METEOR", "ROUGE_L", "CIDEr")


def nlg_metrics(references: Mapping, hypotheses: Mapping, *, tokenize: str = "ptb",
                per_case: bool = False, meteor: str = "jar") -> dict:
    """All NLG metrics on ``{case_id: reference(s)}`` vs ``{case_id: hypothesis}``.

    Args:
        meteor: ``jar`` (METEOR 1.5 through Java; :class:`MeteorUnavailable` without it),
            ``approx`` (medkit's pure-Python approximation, asked for by name) or ``none``.

    Returns ``{"BLEU_1".., "METEOR", "ROUGE_L", "CIDEr", "METEOR_impl"}`` (pycocoevalcap's
    names; ``METEOR_impl`` says which METEOR, ``METEOR`` is None with ``none``), plus
    ``"per_case": {case_id: {...}}`` when asked.
    """
    if meteor not in ("jar", "approx", "none"):
        raise ValueError(f"meteor must be 'jar', 'approx' or 'none', got {meteor!r}")
    ids, r, h = _prepare(references, hypotheses, tokenize)
    b, b_case = bleu(r, h)
    if meteor == "jar":
        m, m_case = meteor_15(r, h)
    elif meteor == "approx":
        m, m_case = meteor_approx(r, h)
    else:
        m, m_case = None, [None] * len(ids)
    rl, rl_case = rouge_l(r, h)
    c, c_case = cider_d(r, h)
    out = {f"BLEU_{k + 1}": b[k] for k in range(4)}
    out.update(METEOR=m, ROUGE_L=rl, CIDEr=c, METEOR_impl=METEOR_IMPLS.get(meteor, "not computed"))
    if per_case:
        out["per_case"] = {i: {**{f"BLEU_{k + 1}": b_case[k][x] for k in range(4)}, "METEOR": m_case[x],
                               "ROUGE_L": rl_case[x], "CIDEr": c_case[x]} for x, i in enumerate(ids)}
    return out
