"""Per-token log-probs of a causal LM, computed chunk-wise.

A 20k-token sequence against Qwen2.5's 152k vocabulary is 12 GB of float32 logits; its gradient another 12 GB. Here
logits exist for ``chunk_size`` tokens at a time, and in training each chunk is recomputed in the backward pass
(activation checkpointing), so peak memory is one chunk's logits whatever the sequence length.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def _chunk_logps(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = (hidden @ weight.t()).float()
    return logits.gather(-1, targets[:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def chunked_token_logps(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                        chunk_size: int = 1024) -> torch.Tensor:
    """log softmax(hidden @ weight^T)[targets] for hidden (N, H), weight (V, H), targets (N,) -> (N,) float32."""
    out = []
    for start in range(0, hidden.shape[0], chunk_size):
        args = (hidden[start:start + chunk_size], weight, targets[start:start + chunk_size])
        if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
            out.append(checkpoint(_chunk_logps, *args, use_reentrant=False))
        else:
            out.append(_chunk_logps(*args))
    return torch.cat(out) if out else hidden.new_zeros(0, dtype=torch.float32)


def pack_targets(hidden: torch.Tensor, input_ids: torch.Tensor, loss_start: torch.Tensor,
                 lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden states that predict each loss token, and those tokens, packed over the batch (no padding).

    Row b has real tokens [0, lengths[b]) and loss tokens [loss_start[b], lengths[b]); token t is predicted from the
    hidden state at t - 1.
    """
    hs, ys = [], []
    for b in range(input_ids.shape[0]):
        s, e = int(loss_start[b]), int(lengths[b])
        hs.append(hidden[b, s - 1:e - 1])
        ys.append(input_ids[b, s:e])
    return torch.cat(hs), torch.cat(ys)


class TokenLogProbs(nn.Module):
    """A causal LM whose forward returns the packed log-probs of the loss tokens instead of logits.

    Wrapping the LM (rather than calling its parts from the training loop) keeps the output head inside one module
    forward, which FSDP and DeepSpeed ZeRO-3 need to gather its sharded weight; the head module itself is called
    once, so that its own FSDP2 unit (accelerate gives an untied head one) is gathered too.
    """

    def __init__(self, lm: nn.Module, chunk_size: int = 1024):
        super().__init__()
        self.lm = lm
        self.chunk_size = chunk_size
        # FSDP's transformer auto-wrap policy reads the decoder-layer classes from here.
        self._no_split_modules = getattr(lm, "_no_split_modules", None)

    # accelerate's FSDP2 RAM-efficient loading re-ties the embeddings of the model it prepares through these; a
    # wrapper without them leaves a tied model (Qwen2.5-0.5B..3B) with an untied, freshly loaded output head.
    def tie_weights(self, *args, **kwargs):
        return self.lm.tie_weights(*args, **kwargs)

    def get_input_embeddings(self) -> nn.Module:
        return self.lm.get_input_embeddings()

    def get_output_embeddings(self) -> nn.Module:
        return self.lm.get_output_embeddings()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, loss_start: torch.Tensor,
                lengths: torch.Tensor) -> torch.Tensor:
        hidden = self.lm.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        h, y = pack_targets(hidden, input_ids, loss_start, lengths)
        head = self.lm.get_output_embeddings()
        # A sharded head — its own FSDP2 unit, as accelerate makes an untied one — is gathered by its own hooks: one
        # call (of a single row) gathers it, and it stays gathered for the chunks (accelerate's head unit is not
        # resharded after forward). One call, not one per chunk: every process then makes the same collectives
        # whatever its number of chunks, and the head's gradient is reduced once, after the backward.
        head(h[:1].detach())
        return chunked_token_logps(h, head.weight, y, self.chunk_size)


def collate(examples: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded micro-batch from prepared examples (dicts with input_ids and prompt_len)."""
    lengths = torch.tensor([len(e["input_ids"]) for e in examples])
    ids = torch.full((len(examples), int(lengths.max())), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, e in enumerate(examples):
        ids[b, :lengths[b]] = torch.tensor(e["input_ids"])
        mask[b, :lengths[b]] = 1
    return {"input_ids": ids, "attention_mask": mask,
            "loss_start": torch.tensor([e["prompt_len"] for e in examples]), "lengths": lengths}
