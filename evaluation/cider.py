"""Captioning metrics without Java: PTB-style tokenisation, CIDEr-D and BLEU-4, as the COCO caption
evaluation (pycocoevalcap) defines them.

Tokenisation (`ptb_tokenize`), the Python stand-in for the Stanford PTBTokenizer run with
-lowerCase -preserveLines followed by pycocoevalcap's punctuation removal:
1. lower-case;
2. split the clitics off as PTB does: "can't" -> "ca n't", "it's" -> "it 's", 're 've 'll 'd 'm;
3. tokens are: numbers with inner separators ("3.5", "1,000"), words with inner hyphens or
   apostrophes ("28-year-old", "o'clock"), "...", "--", and every other punctuation mark alone;
4. drop the punctuation pycocoevalcap drops: '' ' `` ` ( ) [ ] { } . ? ! , : - -- ... ; and ".
Known differences from the Java tokenizer: abbreviations with inner dots ("U.S.") lose their dots
here ("u" "s"); PTB's special cases for "cannot", "gonna" and the like are not split. Neither
occurs in the captions these metrics are used on often enough to move a score noticeably.

CIDEr-D (Vedantam et al. 2015; the variant pycocoevalcap's "CIDEr" computes), for candidate c of
item i with references R_i, over a set of items I:
* g_n(s): counts of the n-grams (n = 1..4) of sentence s;
* df(w) = number of items whose reference set contains n-gram w; idf(w) = log(|I|) - log(max(1, df(w)));
* tf-idf vector v_n(s)[w] = g_n(s)[w] * idf(w); l(s) = number of BIGRAMS of s (the length
  pycocoevalcap's implementation uses);
* sim_n(c, r) = sum_w min(v_n(c)[w], v_n(r)[w]) * v_n(r)[w] / (|v_n(c)| |v_n(r)|)   (clipping)
              * exp(-(l(c) - l(r))^2 / (2 * 6^2))                                     (length penalty)
* CIDEr-D(c, R_i) = 10 / |R_i| * sum_{r in R_i} mean_n sim_n(c, r); the corpus score is the mean
  over items. The idf is computed from the references of the scored set, so a score depends on the
  set (score all of a benchmark at once).

BLEU-4 (Papineni et al. 2002, corpus level as pycocoevalcap): clipped n-gram matches against the
references summed over the corpus; the effective reference length of an item is the reference
length closest to the candidate's (the shorter on ties); BLEU-4 = BP * (prod_{n=1..4} p_n)^(1/4)
with p_n = (matches_n + 1e-15) / (candidate n-grams + 1e-9) and BP = exp(1 - r/c) when c < r.
"""
from __future__ import annotations

import math
import re
from collections import Counter

PUNCTUATION = frozenset(["''", "'", "``", "`", "(", ")", "[", "]", "{", "}", ".", "?", "!", ",", ":", "-", "--",
                         "...", ";", '"'])
_NT = re.compile(r"(\w)(n't)\b")
_CLITIC = re.compile(r"(\w)('(?:s|re|ve|ll|d|m))\b")
_TOKEN = re.compile(r"n't|'(?:s|re|ve|ll|d|m)\b|\d+(?:[.,]\d+)+|\w+(?:[-']\w+)*|\.\.\.|--|[^\w\s]")
SIGMA = 6.0
MAX_N = 4


def ptb_tokenize(text: str) -> list[str]:
    """Tokens of a caption, PTB-style, lower-cased, punctuation dropped (see the module docstring)."""
    text = _NT.sub(r"\1 \2", (text or "").lower())
    text = _CLITIC.sub(r"\1 \2", text)
    return [t for t in _TOKEN.findall(text) if t not in PUNCTUATION]


def ngrams(tokens: list[str], max_n: int = MAX_N) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for n in range(1, max_n + 1) for i in range(len(tokens) - n + 1))


def _vector(counts: Counter, df: Counter, log_items: float):
    vec = [dict() for _ in range(MAX_N)]
    norm = [0.0] * MAX_N
    length = 0
    for gram, tf in counts.items():
        n = len(gram) - 1
        value = tf * (log_items - math.log(max(1.0, df[gram])))
        vec[n][gram] = value
        norm[n] += value * value
        if n == 1:
            length += tf
    return vec, [math.sqrt(x) for x in norm], length


def _sim(cand, ref, sigma: float) -> float:
    (vc, nc, lc), (vr, nr, lr) = cand, ref
    penalty = math.exp(-((lc - lr) ** 2) / (2 * sigma * sigma))
    total = 0.0
    for n in range(MAX_N):
        val = sum(min(v, vr[n].get(g, 0.0)) * vr[n].get(g, 0.0) for g, v in vc[n].items())
        if nc[n] != 0 and nr[n] != 0:
            val /= nc[n] * nr[n]
        total += val * penalty
    return total / MAX_N


def cider_d(candidates: list[list[str]], references: list[list[list[str]]], sigma: float = SIGMA
            ) -> tuple[float, list[float]]:
    """(corpus CIDEr-D, per-item scores) of tokenised candidates against tokenised reference lists."""
    if len(candidates) != len(references):
        raise ValueError("one reference list per candidate")
    if not candidates:
        return 0.0, []
    ref_counts = [[ngrams(r) for r in refs] for refs in references]
    df: Counter = Counter()
    for counts in ref_counts:
        df.update({g for c in counts for g in c})
    log_items = math.log(float(len(candidates)))
    scores = []
    for cand, counts in zip(candidates, ref_counts):
        vc = _vector(ngrams(cand), df, log_items)
        sims = [_sim(vc, _vector(c, df, log_items), sigma) for c in counts]
        scores.append(10.0 * sum(sims) / len(sims) if sims else 0.0)
    return sum(scores) / len(scores), scores


def bleu4(candidates: list[list[str]], references: list[list[list[str]]]) -> float:
    """Corpus BLEU-4 (see the module docstring)."""
    matches = [0] * MAX_N
    guesses = [0] * MAX_N
    cand_len = ref_len = 0
    for cand, refs in zip(candidates, references):
        counts = ngrams(cand)
        best: Counter = Counter()
        for r in refs:
            for g, k in ngrams(r).items():
                best[g] = max(best[g], k)
        for g, k in counts.items():
            matches[len(g) - 1] += min(k, best[g])
        for n in range(MAX_N):
            guesses[n] += max(0, len(cand) - n)
        cand_len += len(cand)
        if refs:
            ref_len += min((abs(len(r) - len(cand)), len(r)) for r in refs)[1]
    score = 1.0
    for n in range(MAX_N):
        score *= (matches[n] + 1e-15) / (guesses[n] + 1e-9)
    score = score ** (1.0 / MAX_N)
    ratio = (cand_len + 1e-15) / (ref_len + 1e-9)
    if ratio < 1.0:
        score *= math.exp(1.0 - 1.0 / ratio)
    return score
