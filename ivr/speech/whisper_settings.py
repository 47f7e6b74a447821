"""The Whisper engine's settings: every tunable of the closed-set recogniser in one place.

The measurements behind the defaults are in ``docs/recognition.md``; the engine
(``ivr.speech.whisper_engine``), its name locator and its decision read them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EngineSettings:
    cpu_threads: int = 1  # intra-op threads per model call
    workers: int = 2  # worker threads = parallel model calls (CTranslate2 inter_threads)
    compute_type: str = "int8"
    window: str = "short"  # "short": encoder window = utterance length; "full": 30 s
    min_window_frames: int = 100  # 1 s of 10 ms mel frames
    bias: str = "prompt"  # "prompt": candidate names as previous text; "none"
    locate: bool = True  # greedy transcript to place names inside carrier phrases
    beam_size: int = 1
    locate_floor: float = 50.0  # matcher score below which the transcript is ignored
    village_candidates: int = 3  # villages of the matcher's best N candidates are shortlisted
    keep_suffix: bool = False  # keep the transcript words after the name in the rescored text
    score_punct: bool = True  # score the punctuation after the name too (its priors are then not the bare ones)
    bare_too: bool = False  # also score every phrase on its own when the transcript has a prefix
    text_weight: float = 10.0  # + weight * matcher score (0..1) of the transcript, per municipality
    agree_text: float = 0.7  # the transcript's best matcher score (0..1) that counts as a vote
    accept_agree_margin: float = 6.0  # acoustic margin (nats) to accept when transcript and audio agree
    accept_margin: float = 12.0  # acoustic margin (nats) to accept on the audio alone
    choose_margin: float = 1.0  # fused margin below which (without agreement) the caller chooses
    pool: str = "lse"  # per municipality: "lse" (log-sum-exp) or "max" over its phrases
    pmi_alpha: float = 1.0  # weight of the prior subtracted from each sequence score
    temperature: float = 4.0  # softmax temperature on the per-municipality scores
    max_places: int = 6  # villages shortlisted per utterance (by sound-alike to the transcript)
    place_floor: float = 60.0  # min fuzzy score (0..100) for a village to be shortlisted
    yes_no: str = "auto"  # "ja"/"nee" compete as classes: "auto" = in a yes/no question only
    max_new_tokens: int = 24  # transcript cap ...
    base_tokens: int = 6  # ... and budget: base + tokens_per_second * seconds of speech
    tokens_per_second: float = 5.0
    max_batch: int = 8  # queued utterances decided together in one set of model calls
    null_level: float = -1.0  # log-mel value of the "silence" the priors are scored on
    prior_frames: int = 200  # the silence the priors are scored on (fixed: priors are cached)
    trim_margin_s: float = 0.4  # cut leading/trailing silence beyond this margin (0: no trim)
    # fast path, off (inf): score the bare phrases first and accept without a transcript when
    # one name leads by >= fast_margin nats. Measured: skips 12% of transcripts at 12 nats, costs
    # more than it saves (309 -> 372 ms model time per utterance on dev); see docs/recognition.md
    fast_margin: float = float("inf")
