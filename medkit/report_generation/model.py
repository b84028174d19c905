"""CoFE: image encoder + learnable prompt + causal LM (Li et al., ECCV 2024, arXiv 2407.14474).

The LM reads a prefix of embeddings, then the report::

    [ctx_1..ctx_P] [fact_1..fact_14] [cf_1..cf_14] [vis_1..vis_N] report tokens <eos>
     learnable      factual content   counterfactual  projected
     context        (diagnosis p)     content (q)     visual tokens

``fact_k = p_k * present_k + (1 - p_k) * absent_k`` with ``p`` the diagnosis
head's probabilities on the image, and ``cf_k = q_k * present_k + (1 - q_k) *
absent_k + cf_shift`` with ``q`` the probabilities on its counterfactual image
(the negative's most relevant patches swapped in until the diagnosis shifts).
``present``/``absent``/``ctx``/``cf_shift`` are learnable embeddings in the LM's
input space: the prompt carries what the image shows and what it would show
had its decision-relevant regions looked like the nearest study with a
different diagnosis. This is our reading of CoFE's "learnable prompt
encapsulating factual and counterfactual content" (the paper's prompt is
built on BLIP text; the public code does not fix this layout). At training
time ``q`` comes from the training counterfactuals (built against the
studies' labels, optionally rebuilt as the encoder trains); at inference from
a counterfactual built against the nearest image of a bank of training images
(``bank_images``, with their labels ``bank_labels``) whose labels differ from
the image's predicted ones.

Ablations: ``decoder.prompt=false`` drops ctx/fact/cf (visual tokens only);
``counterfactual.enabled=false`` drops the cf tokens and the counterfactual
negative of the InfoNCE term, which keeps its in-batch image negatives
(``loss.w_cf=0`` drops InfoNCE altogether).

Shapes: images ``(B, 1, S, S)``; prefix ``(B, P + 14 + 14 + N, d)`` with ``d``
the LM hidden size; ``N = (S / 16)^2`` visual tokens for the default DenseNet.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..metrics.clinical import OBSERVATIONS
from .cofe_config import ReportConfig
from .counterfactual import (
    cosine_similarity,
    gradient_relevance,
    pick_negatives,
    swap_counterfactual,
)
from .encoder import ImageEncoder
from .losses import counterfactual_info_nce, diagnosis_loss, report_nll

L = len(OBSERVATIONS)
SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]


def word_tokenizer(vocab: list[str]):
    """A word-level ``PreTrainedTokenizerFast`` over ``vocab`` (whitespace split) with pad/eos/bos/unk."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = SPECIALS + [w for w in vocab if w not in SPECIALS]
    core = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    from tokenizers import decoders

    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins tokens with spaces
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>",
                                  unk_token="<unk>")
    tok.padding_side = "right"
    return tok


def report_vocab(reports: list[str], min_count: int = 1) -> list[str]:
    """Words of the training reports, most frequent first (R2Gen builds its vocabulary the same way)."""
    from collections import Counter

    c = Counter(w for r in reports for w in r.split())
    return [w for w, n in sorted(c.items(), key=lambda x: (-x[1], x[0])) if n >= min_count]


def build_lm(cfg: ReportConfig, vocab: list[str] | None):
    """``(lm, tokenizer)`` from ``cfg.decoder``; ``vocab`` is needed for ``tiny-word``."""
    from ..lm import add_lora, load_causal_lm, tiny_causal_lm

    d = cfg.decoder
    if d.lm == "tiny-word":
        if vocab is None:
            raise ValueError("tiny-word LM needs the training vocabulary")
        tok = word_tokenizer(vocab)
        lm, tok = tiny_causal_lm(tok, layers=d.tiny_layers, hidden=d.tiny_hidden, heads=d.tiny_heads, seed=cfg.seed)
        if d.tune == "lora":
            lm = add_lora(lm, {"r": d.lora_r, "lora_alpha": 2 * d.lora_r, "target_modules": list(d.lora_targets)})
    else:
        lora = ({"r": d.lora_r, "lora_alpha": 2 * d.lora_r, "target_modules": list(d.lora_targets)}
                if d.tune == "lora" else None)
        try:
            lm, tok = load_causal_lm(d.lm, lora=lora, device="cpu")
        except FileNotFoundError as e:
            from ..config import ConfigError

            raise ConfigError(f"decoder.lm: {e}") from None
        tok.padding_side = "right"
    if d.tune == "frozen":
        lm.requires_grad_(False)
    return lm, tok


class CoFE(nn.Module):
    """Encoder + prompt + LM. ``text_dim``: size of the fixed report embeddings used by InfoNCE."""

    def __init__(self, cfg: ReportConfig, lm, tok, text_dim: int):
        super().__init__()
        self.cfg, self.lm, self.tok = cfg, lm, tok
        self.encoder = ImageEncoder(cfg.encoder, L, cfg.data.image_size)
        emb = lm.get_input_embeddings().weight
        d, c, s = emb.shape[1], self.encoder.channels, float(emb.detach().float().std())
        self.visual_proj = nn.Sequential(nn.Linear(c, d), nn.GELU(), nn.Linear(d, d))
        self.use_prompt = cfg.decoder.prompt
        self.use_cf = cfg.counterfactual.enabled
        if self.use_prompt:
            self.context = nn.Parameter(torch.randn(cfg.decoder.n_context, d) * s)
            self.present = nn.Parameter(torch.randn(L, d) * s)
            self.absent = nn.Parameter(torch.randn(L, d) * s)
            self.cf_shift = nn.Parameter(torch.randn(L, d) * s)
        e = cfg.loss.embed_dim
        self.image_proj = nn.Linear(c, e)
        self.text_proj = nn.Linear(text_dim, e)
        self.text_dim = text_dim
        self.register_buffer("bank_images", torch.zeros(0, 1, cfg.data.image_size, cfg.data.image_size))
        self.register_buffer("bank_labels", torch.zeros(0, L))

    # ------------------------------------------------------------------ the prefix
    def _content(self, probs: torch.Tensor) -> torch.Tensor:
        return probs[..., None] * self.present + (1 - probs[..., None]) * self.absent

    def prefix(self, images: torch.Tensor, cf_probs: torch.Tensor | None = None, enc: dict | None = None):
        """``(prefix (B, P', d), encoder outputs)``; ``cf_probs`` ``(B, 14)`` fills the cf tokens."""
        enc = enc if enc is not None else self.encoder(images)
        vis = self.visual_proj(enc["tokens"])
        parts = []
        if self.use_prompt:
            B = images.shape[0]
            p = torch.sigmoid(enc["logits"])
            parts += [self.context.expand(B, -1, -1), self._content(p)]
            if self.use_cf:
                q = cf_probs if cf_probs is not None else p.detach()
                parts.append(self._content(q) + self.cf_shift)
        parts.append(vis)
        return torch.cat(parts, 1).to(self.lm.get_input_embeddings().weight.dtype), enc

    # ------------------------------------------------------------------ training
    def encode_reports(self, reports: list[str], device) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded ``(B, T)`` ids (report + EOS, cut at ``max_report_tokens``) and mask."""
        m = self.cfg.decoder.max_report_tokens
        rows = [self.tok(r, add_special_tokens=False)["input_ids"][: m - 1] + [self.tok.eos_token_id] for r in reports]
        T = max(len(r) for r in rows)
        ids = torch.full((len(rows), T), self.tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros(len(rows), T, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        return ids.to(device), mask.to(device)

    def losses(self, images, reports: list[str], labels, text_emb, cf_images=None) -> dict[str, torch.Tensor]:
        """``{"total", "nll", "diag", "nce"}`` for a batch.

        Args:
            images: ``(B, 1, S, S)``. labels: ``(B, 14)`` 0/1. text_emb: ``(B, text_dim)``.
            cf_images: ``(B, 1, S, S)`` counterfactuals (required when counterfactuals are enabled).
        """
        lc = self.cfg.loss
        enc = self.encoder(images)
        enc_cf = self.encoder(cf_images) if (self.use_cf and cf_images is not None) else None
        q = torch.sigmoid(enc_cf["logits"]) if enc_cf is not None else None
        pre, _ = self.prefix(images, q, enc)
        ids, mask = self.encode_reports(reports, images.device)
        emb = self.lm.get_input_embeddings()(ids)
        x = torch.cat([pre, emb], 1)
        P = pre.shape[1]
        attn = torch.cat([torch.ones(ids.shape[0], P, dtype=torch.long, device=ids.device), mask], 1)
        tgt = torch.cat([torch.full((ids.shape[0], P), -100, dtype=torch.long, device=ids.device),
                         ids.masked_fill(mask == 0, -100)], 1)
        logits = self.lm(inputs_embeds=x, attention_mask=attn, use_cache=False).logits
        nll = report_nll(logits, tgt)
        diag = diagnosis_loss(enc["logits"], labels)
        t = self.text_proj(text_emb)
        v = self.image_proj(enc["pooled"])
        v_cf = self.image_proj(enc_cf["pooled"]) if enc_cf is not None else None
        nce = counterfactual_info_nce(t, v, v_cf, lc.temperature)
        total = lc.w_nll * nll + lc.w_diag * diag + lc.w_cf * nce
        return {"total": total, "nll": nll, "diag": diag, "nce": nce}

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def test_time_cf_probs(self, images: torch.Tensor) -> torch.Tensor | None:
        """``(B, 14)`` diagnosis probabilities of counterfactuals against the bank (None if unused)."""
        if not (self.use_prompt and self.use_cf) or self.bank_images.shape[0] == 0:
            return None
        was = self.encoder.training
        self.encoder.eval()
        bank = self.encoder(self.bank_images)
        enc = self.encoder(images)
        p = torch.sigmoid(enc["logits"])
        sim = cosine_similarity(enc["pooled"].cpu().numpy(), bank["pooled"].cpu().numpy())
        # the bank's own labels where the model has them (trained since they were added); else its predictions
        known = self.bank_labels.shape[0] == self.bank_images.shape[0]
        bank_y = self.bank_labels if known else (torch.sigmoid(bank["logits"]) > 0.5).float()
        neg = pick_negatives(sim, (p > 0.5).cpu().numpy(), (bank_y > 0.5).cpu().numpy())
        out = p.clone()
        cc = self.cfg.counterfactual
        jj = torch.as_tensor(np.maximum(neg, 0), device=images.device)
        t_neg = bank_y[jj] if known else torch.sigmoid(bank["logits"])[jj]
        rel = (gradient_relevance(self.encoder.diagnose, images, self.bank_images[jj], cc.patch, t_neg)
               if cc.relevance == "gradient" else None)
        for i, j in enumerate(neg):
            if j < 0:
                continue
            cf = swap_counterfactual(self.encoder.diagnose, images[i], self.bank_images[j], cc.patch,
                                     max_fraction=cc.max_fraction, batch=cc.swap_chunk,
                                     relevance=rel[i] if rel is not None else None, target_negative=t_neg[i])
            out[i] = self.encoder.diagnose(cf.image[None])[0]
        self.encoder.train(was)
        return out

    @torch.no_grad()
    def generate(self, images: torch.Tensor, *, beams: int = 1, max_new_tokens: int = 96) -> list[str]:
        """Reports for ``(B, 1, S, S)`` images: greedy (``beams=1``) or beam search."""
        was = self.training
        self.eval()
        pre, _ = self.prefix(images, self.test_time_cf_probs(images))
        attn = torch.ones(pre.shape[:2], dtype=torch.long, device=pre.device)
        eos = self.tok.eos_token_id
        out = self.lm.generate(inputs_embeds=pre, attention_mask=attn, max_new_tokens=max_new_tokens,
                               do_sample=False, num_beams=beams, pad_token_id=self.tok.pad_token_id,
                               eos_token_id=eos, bos_token_id=None)
        self.train(was)
        texts = []
        for row in out.tolist():
            if eos in row:
                row = row[: row.index(eos)]
            texts.append(" ".join(self.tok.decode(row, skip_special_tokens=True).split()))
        return texts

    # ------------------------------------------------------------------ checkpoints
    def saved_state(self) -> dict[str, torch.Tensor]:
        """State dict without frozen LM base weights (they reload from ``decoder.lm``)."""
        keep_lm = self.cfg.decoder.lm == "tiny-word" or self.cfg.decoder.tune == "full"
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        return {k: v.detach().cpu() for k, v in self.state_dict().items()
                if not k.startswith("lm.") or keep_lm or k in trainable}

    def load_saved_state(self, state: dict[str, torch.Tensor]) -> None:
        for buf in ("bank_images", "bank_labels"):  # sized by the data, not the config
            if buf in state:
                setattr(self, buf, state[buf].to(getattr(self, buf).device))
        missing, unexpected = self.load_state_dict(state, strict=False)
        saved_keys = set(self.saved_state()) - {"bank_labels"}  # absent in models saved before it existed
        bad = [k for k in missing if k in saved_keys]
        if bad or unexpected:
            raise KeyError(f"checkpoint does not match the model: missing {bad[:5]}, unexpected {unexpected[:5]}")


def trainable_groups(model: CoFE, cfg: ReportConfig) -> list[dict]:
    """AdamW groups: the LM's trainable parameters at ``lr_lm``, everything else at ``lr``."""
    lm_ids = {id(p) for p in model.lm.parameters()}
    lm_p = [p for p in model.lm.parameters() if p.requires_grad]
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in lm_ids]
    groups = [{"params": rest, "lr": cfg.optim.lr}]
    if lm_p:
        groups.append({"params": lm_p, "lr": cfg.optim.lr_lm})
    return groups


def bank_indices(n: int, size: int, seed: int) -> np.ndarray:
    """Which training images the model keeps for test-time counterfactuals (a seeded subset)."""
    rng = np.random.default_rng([seed, 77])
    return np.sort(rng.permutation(n)[: min(n, size)])
