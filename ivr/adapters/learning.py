"""Self-learning speech routing (issue 12): collect, promote safely, learn.

* **Collect** (``IVR_LEARN_COLLECT``, off by default): when a call ends, the labelling rule
  (:func:`ivr.core.learning.labels`) names the spoken answers the caller confirmed, chose
  in "A of B?" or followed by a menu pick after a failed recognition; each is kept as a
  *candidate* with its label (CBS code, phrase), area code, salted caller hash, time and the
  engine's features of the utterance: the Whisper encoder states projected on the engine's
  128 components (float16) and the log-mel template. Not the audio: the features are what
  the engine compares, about a third the size of 8 kHz audio, cannot be played back as a
  voice, and are bound to one engine (``space``; a changed projection ignores them). They
  are still derived from a voice, so they are personal data: retention in days, caps per
  municipality and per caller, purge by caller hash.
* **Promote safely**: a candidate becomes *active* by an operator's approval (CLI, admin
  API; audited) or by agreement - candidates of one municipality from ``learn_agreement``
  distinct (non-empty) caller hashes - and in both cases only when the held-back check
  (:meth:`Learning.held_back_check`) does not get worse. One caller never makes agreement.
* **Learn**: active rows become extra references of their municipality's phrase in the
  fusion engine (:meth:`ivr.speech.fusion_engine.FusionEngine.set_learned`).
"""

from __future__ import annotations

import base64
import io
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

import numpy as np

from ivr.core.callrecord import CallRecord
from ivr.core.learning import Label, labels

log = logging.getLogger(__name__)

__all__ = ["Learning", "encode_features", "decode_features"]

CANDIDATE, ACTIVE, REJECTED = "candidate", "active", "rejected"


def encode_features(states: np.ndarray, mel: np.ndarray) -> str:
    buf = io.BytesIO()
    np.savez_compressed(buf, states=states.astype(np.float16), mel=mel.astype(np.float16))
    return base64.b64encode(buf.getvalue()).decode("ascii")


def decode_features(text: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(io.BytesIO(base64.b64decode(text))) as z:
        return z["states"], z["mel"].astype(np.float32)


class Learning:
    """The loop's operations on one records store and (when loaded) one fusion engine."""

    def __init__(self, store, settings, *, engine=None, plan: Callable[[], Any] | None = None, metrics=None):
        self.store = store
        self.settings = settings
        self.engine = engine
        self.plan = plan
        self.metrics = metrics
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="learning")
        self._lock = threading.Lock()  # one promotion at a time: the check reads the active set

    def _count(self, step: str, n: int = 1) -> None:
        if self.metrics is not None and n:
            self.metrics.learning_step(step, n)

    # -- collect ------------------------------------------------------------------------
    def call_ended(self, record: CallRecord, utterances: Sequence[tuple[bytes, float | None, float | None]]) -> None:
        """Queue the call's labelled answers (off the event loop: the encoder takes ~0.1-1 s)."""
        found = [label for label in labels(record) if label.spoken < len(utterances)]
        if found and self.engine is not None:
            self._pool.submit(self._collect_logged, record, [(lb, utterances[lb.spoken]) for lb in found])

    def _collect_logged(self, record: CallRecord, items) -> None:
        try:
            self.collect(record, items)
        except Exception:  # learning must never disturb calls
            log.exception("call %s: collecting its confirmed answers failed", record.call_id)

    def collect(self, record: CallRecord, items: Sequence[tuple[Label, bytes | tuple]], *, now: float | None = None
                ) -> list[int]:
        """Keep each labelled utterance (slin, or (slin, p_right, margin) as the speech path keeps it)
        as a candidate, within the caps; ids of those kept."""
        now = time.time() if now is None else now
        kept = []
        for label, answer in items:
            utterance, p_right, margin = answer if isinstance(answer, tuple) else (answer, None, None)
            self._count("collected")
            states, mel = self.engine.learned_features(utterance)
            row = {"call_id": record.call_id, "cbs_code": label.cbs_code,
                   "phrase": label.phrase or self._name(label.cbs_code), "area_code": record.area_code,
                   "caller": record.caller, "how": label.how, "collected_at": now,
                   "expires_at": now + self.settings.learn_retention_days * 86400, "status": CANDIDATE,
                   "p_right": p_right, "margin": margin, "space": self.engine.feature_space,
                   "features": encode_features(states, mel)}
            item_id = self.store.add_learned(row, per_municipality=self.settings.learn_cap_municipality,
                                             per_caller=self.settings.learn_cap_caller)
            if item_id is None:
                self._count("capped")
                log.info("call %s: answer for %s not kept (cap reached)", record.call_id, label.cbs_code)
                continue
            self._count("candidate")
            kept.append(item_id)
            log.info("call %s: answer kept as learning candidate %d for %s (%s)", record.call_id, item_id,
                     label.cbs_code, label.how)
            if self.settings.learn_agreement:
                self.promote_by_agreement(label.cbs_code)
        return kept

    def _name(self, code: str) -> str:
        from ivr.speech.closed_set import municipality_choice
        plan = self.plan() if self.plan else None
        if plan is None or code not in plan.municipalities:
            return code
        return municipality_choice(plan.municipalities[code]).phrases[0]

    # -- promote --------------------------------------------------------------------------
    def approve(self, item_id: int, who: str) -> dict[str, Any]:
        """An operator's approval: active if the held-back check does not get worse; audited."""
        with self._lock:
            row = self.store.learned_item(item_id)
            if row is None:
                return {"ok": False, "reason": "no such learning candidate", "id": item_id}
            if row["status"] != CANDIDATE:
                return {"ok": False, "reason": f"candidate is {row['status']}", "id": item_id}
            return self._promote(row, who, "approval")

    def reject(self, item_id: int, who: str) -> dict[str, Any]:
        row = self.store.learned_item(item_id)
        if row is None:
            return {"ok": False, "reason": "no such learning candidate", "id": item_id}
        self.store.set_learned_status(item_id, REJECTED, who)
        self.store.audit(who, "learn_reject", f"learned/{item_id}", {"status": row["status"]},
                         {"status": REJECTED, "cbs_code": row["cbs_code"]})
        self._count("rejected_operator")
        if row["status"] == ACTIVE:
            self.refresh()
        return {"ok": True, "id": item_id, "status": REJECTED}

    def purge(self, caller: str, who: str) -> int:
        gone = self.store.purge_learned(caller=caller)
        self.store.audit(who, "learn_purge", f"caller/{caller}", None, {"deleted": gone})
        self.refresh()
        return gone

    def promote_by_agreement(self, cbs_code: str) -> list[int]:
        """Candidates of ``cbs_code`` from ``learn_agreement`` distinct caller hashes: each caller's
        latest one is promoted if it passes the held-back check."""
        k = self.settings.learn_agreement
        if not k:
            return []
        with self._lock:
            latest: dict[str, dict] = {}
            for row in self.store.learned(status=CANDIDATE, cbs_code=cbs_code, features=True):
                if row["caller"]:  # a withheld number is nobody in particular: it never agrees
                    latest[row["caller"]] = row
            if len(latest) < k:
                return []
            done = []
            for row in latest.values():
                if self._promote(row, "agreement", "agreement")["ok"]:
                    done.append(row["id"])
            return done

    def _promote(self, row: dict, who: str, how: str) -> dict[str, Any]:
        check = self.held_back_check(row)
        if check["after"] < check["before"]:
            self.store.set_learned_status(row["id"], REJECTED, who)
            self.store.audit(who, "learn_refused", f"learned/{row['id']}", {"status": row["status"]},
                             {"status": REJECTED, "cbs_code": row["cbs_code"], "check": check})
            self._count("rejected_check")
            return {"ok": False, "reason": "the held-back check got worse", "id": row["id"], "check": check}
        self.store.set_learned_status(row["id"], ACTIVE, who)
        self.store.audit(who, "learn_approve" if how == "approval" else "learn_agreement", f"learned/{row['id']}",
                         {"status": row["status"]}, {"status": ACTIVE, "cbs_code": row["cbs_code"], "check": check})
        self._count(f"promoted_{how}")
        self.refresh()
        return {"ok": True, "id": row["id"], "status": ACTIVE, "check": check}

    def held_back_check(self, row: dict) -> dict[str, Any]:
        """Decide every *other* stored utterance (candidate or active, of other callers than the
        candidate's, this engine's space) labelled with a municipality of the candidate's area
        code (or collected on it), among those municipalities, by the engine's distance score alone: per
        reference 50 x encoder-state distance + 30 x log-mel distance, the best reference of each
        municipality (its phrases and places in the first reference voice, plus its active learned
        references), no decoder (the stored features have no audio to decode) - before and after
        adding the candidate. ``before``/``after``: how many were decided right; ``n``: how many."""
        engine = self.engine
        if engine is None:
            return {"n": 0, "before": 0, "after": 0, "note": "no engine loaded"}
        stored = self.store.learned(features=True)
        codes = self._area_codes(row)
        codes = sorted(set(codes) | {r["cbs_code"] for r in stored if r["area_code"] == row["area_code"]})
        held = [r for r in stored
                if r["id"] != row["id"] and r["status"] != REJECTED and r["cbs_code"] in codes
                and r["space"] == row["space"] and not (row["caller"] and r["caller"] == row["caller"])]
        if not held:
            return {"n": 0, "before": 0, "after": 0}
        active = [r for r in stored if r["status"] == ACTIVE and r["space"] == row["space"] and r["id"] != row["id"]]
        refs = {c: [] for c in codes}  # code -> [(states, mel)]
        self._spoken_references(engine, codes, refs)
        for r in active:
            if r["cbs_code"] in refs:
                refs[r["cbs_code"]].append(decode_features(r["features"]))
        right_before = self._right(engine, held, refs)
        refs[row["cbs_code"]] = [*refs.get(row["cbs_code"], []), decode_features(row["features"])]
        right_after = self._right(engine, held, refs)
        return {"n": len(held), "before": right_before, "after": right_after}

    def _area_codes(self, row: dict) -> list[str]:
        plan = self.plan() if self.plan else None
        codes = {row["cbs_code"]}
        if plan is not None and row.get("area_code") in plan.area_codes:
            codes |= set(plan.area_codes[row["area_code"]].municipalities)
        return sorted(codes)

    def _spoken_references(self, engine, codes, refs) -> None:
        from ivr.speech.closed_set import municipality_choice
        plan = self.plan() if self.plan else None
        for code in codes:
            if plan is None or code not in plan.municipalities:
                continue
            c = municipality_choice(plan.municipalities[code])
            phrases = [*c.phrases, *c.places]
            for states, mel in zip(engine.banks[0].get(phrases), engine.templates[0].get(phrases)):
                refs[code].append((states, mel))

    @staticmethod
    def _right(engine, held, refs) -> int:
        from ivr.speech.templates import subsequence_dtw
        s = engine.settings
        right = 0
        for r in held:
            states, mel = decode_features(r["features"])
            states = states.astype(np.float32)
            best, best_code = np.inf, None
            for code, pairs in refs.items():
                if not pairs:
                    continue
                d, _ = subsequence_dtw([p[0] for p in pairs], states)
                t, _ = subsequence_dtw([p[1] for p in pairs], mel)
                score = float(np.min(s.dtw_weight * d + s.template_weight * t))
                if score < best:
                    best, best_code = score, code
            right += best_code == r["cbs_code"]
        return right

    # -- learn ----------------------------------------------------------------------------
    def refresh(self) -> int:
        """Hand the engine the active references of its feature space; how many."""
        engine = self.engine
        if engine is None or not hasattr(engine, "set_learned"):
            return 0
        rows = [r for r in self.store.learned(status=ACTIVE, features=True) if r["space"] == engine.feature_space]
        refs = []
        for r in rows:
            states, mel = decode_features(r["features"])
            refs.append((r["cbs_code"], r["phrase"], states, mel))
        return engine.set_learned(refs)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
