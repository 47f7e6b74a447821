"""The template-matching recogniser: DTW, features, reference cache and the engine itself.

No mocks: references are really spoken by espeak-ng and band-limited by sox, into a cache
directory private to this module (never the user's cache). The engine is run on rows of
the development corpus (``tests/data/dev``) and on synthetic non-speech.

    .venv/bin/python -m pytest -q tests/test_template_engine.py
"""

from __future__ import annotations

import csv
import hashlib
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
    pytest.skip("the template engine speaks its references with espeak-ng and sox: "
                "apt-get install -y espeak-ng sox", allow_module_level=True)

from ivr.core.matcher import Matcher, MatchVerdict  # noqa: E402
from ivr.plan_files import load_base_plan  # noqa: E402
from ivr_lab.replay import decide  # noqa: E402
from ivr_lab.replay_items import read_slin  # noqa: E402
from ivr.speech.closed_set import frames_of  # noqa: E402
from ivr.speech.template_engine import TemplateEngine, TemplateSettings  # noqa: E402
from ivr.speech.templates import FeatureSettings, ReferenceBank, log_mel, subsequence_dtw  # noqa: E402

DEV = Path(__file__).resolve().parent / "data" / "dev"
RATE = 8000
D = 40  # feature dimension of the synthetic DTW tests


# --- helpers ---------------------------------------------------------------------------

def to_slin(audio: np.ndarray) -> bytes:
    """float audio in [-1, 1] -> 16-bit little-endian slin bytes."""
    return np.clip(np.asarray(audio) * 32768.0, -32768, 32767).astype("<i2").tobytes()


def feed_all(session, slin: bytes):
    for frame in frames_of(slin):  # 20 ms frames, as a live call feeds them
        session.feed(frame)
    return session.finish()


def rand_frames(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.standard_normal((n, D)).astype(np.float32)


def dev_rows() -> dict[str, dict[str, str]]:
    with open(DEV / "manifest.csv", newline="", encoding="utf-8") as f:
        return {r["path"]: r for r in csv.DictReader(f)}


@pytest.fixture(scope="module")
def plan():
    return load_base_plan()


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("template-cache")


@pytest.fixture(scope="module")
def engine(plan, cache_dir) -> TemplateEngine:
    return TemplateEngine(plan, cache_dir=cache_dir)


@pytest.fixture(scope="module")
def m3_bank(cache_dir) -> ReferenceBank:
    """A corpus voice (nl+m3), disjoint from the engine's reference voices."""
    return ReferenceBank(FeatureSettings(voice="nl+m3"), cache_dir)


# --- 1. subsequence DTW on synthetic features ---------------------------------------------

def test_dtw_finds_reference_embedded_in_longer_utterance():
    rng = np.random.default_rng(0)
    ref, unrelated = rand_frames(rng, 20), rand_frames(rng, 20)
    utterance = np.concatenate([rand_frames(rng, 30), ref, rand_frames(rng, 25)])
    dist, length = subsequence_dtw([ref, unrelated], utterance)
    assert dist.shape == length.shape == (2,)
    assert dist[0] < 1e-4, "an exact copy inside the utterance must score (near) zero"
    assert dist[1] > 0.5, "random 40-d frames are near-orthogonal: cosine distance ~1"
    assert length[0] == 20, "an exact copy is matched along the diagonal, one frame per frame"


def test_dtw_matches_slower_and_faster_speech():
    rng = np.random.default_rng(1)
    ref, unrelated = rand_frames(rng, 20), rand_frames(rng, 20)
    # 1.5x slower: every other frame repeated (20 -> 30 frames), plus a little noise
    slow = np.repeat(ref, [2, 1] * 10, axis=0) + 0.1 * rand_frames(rng, 30)
    utterance = np.concatenate([rand_frames(rng, 30), slow, rand_frames(rng, 25)])
    dist, length = subsequence_dtw([ref, unrelated], utterance)
    assert dist[0] < 0.05 and dist[1] > 0.5 and dist[1] > 10 * dist[0]
    assert 20 <= length[0] <= 31
    # 1.5x faster: every third frame dropped (30 -> 20 frames); the (j-2) step covers it
    long_ref = rand_frames(rng, 30)
    fast = np.delete(long_ref, np.arange(2, 30, 3), axis=0)
    utterance = np.concatenate([rand_frames(rng, 30), fast, rand_frames(rng, 25)])
    dist, _ = subsequence_dtw([long_ref, unrelated], utterance)
    assert dist[0] < 0.1 and dist[1] > 0.5


def test_dtw_batch_equals_one_reference_at_a_time():
    """References of different lengths are padded and advanced together: padding must not
    change any reference's score."""
    rng = np.random.default_rng(2)
    refs = [rand_frames(rng, n) for n in (5, 17, 33, 1)]
    utterance = rand_frames(rng, 60)
    together, lens = subsequence_dtw(refs, utterance)
    for k, r in enumerate(refs):
        alone, alone_len = subsequence_dtw([r], utterance)
        assert together[k] == pytest.approx(float(alone[0]), abs=1e-5)
        assert lens[k] == alone_len[0]


def _dtw_by_hand(ref: np.ndarray, utterance: np.ndarray) -> tuple[float, int, int]:
    """The recurrence written out cell by cell, in plain Python: the compiled one must agree."""
    unit = lambda x: x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-9)  # noqa: E731
    cost = 1.0 - unit(ref.astype(np.float64)) @ unit(utterance.astype(np.float64)).T  # (ref frame, utterance frame)
    n = ref.shape[0]
    cells = {j: (1e9, 1.0) for j in range(n)}  # reference frame -> (summed cost, path length)
    mean = lambda c: c[0] / max(c[1], 1.0)  # noqa: E731
    fresh = (0.0, 0.0)  # a path may start at any utterance frame, at reference frame 0 (or 1)
    best = (np.inf, 1, 0)
    for i in range(utterance.shape[0]):
        new = {}
        for j in range(n):
            options = [cells[j - 1] if j >= 1 else fresh, cells[j], cells[j - 2] if j >= 2 else (fresh if j == 1 else (1e9, 1.0))]
            diag, stay, skip = options
            src = stay if mean(stay) < mean(diag) else diag
            if mean(skip) < min(mean(diag), mean(stay)):
                src = skip
            new[j] = (min(src[0] + cost[j, i], 1e9), src[1] + 1.0)
        cells = new
        here = mean(cells[n - 1]) if cells[n - 1][1] else 0.0
        if here < best[0]:
            best = (here, int(cells[n - 1][1]), i)
    return best


def test_dtw_agrees_with_the_recurrence_written_out_by_hand():
    rng = np.random.default_rng(7)
    for _ in range(25):
        refs = [rand_frames(rng, int(rng.integers(1, 9))) for _ in range(int(rng.integers(1, 4)))]
        utterance = rand_frames(rng, int(rng.integers(1, 14)))
        if rng.random() < 0.5:  # a reference hidden inside, a little distorted
            utterance = np.concatenate([utterance, refs[0] + 0.05 * rand_frames(rng, refs[0].shape[0])])
        dist, length, end = subsequence_dtw(refs, utterance, with_end=True)
        for k, r in enumerate(refs):
            want, want_len, want_end = _dtw_by_hand(r, utterance)
            assert dist[k] == pytest.approx(want, abs=1e-4)
            if dist[k] < 2.0:  # a real path (not "no path at all"): same length and end
                assert (length[k], end[k]) == (want_len, want_end)


def test_dtw_empty_inputs_and_references_that_cannot_fit():
    rng = np.random.default_rng(3)
    refs = [rand_frames(rng, 10), rand_frames(rng, 7), np.zeros((0, D), np.float32)]
    dist, length = subsequence_dtw(refs, np.zeros((0, D), np.float32))
    assert dist.shape == length.shape == (3,)
    assert np.all(np.isfinite(dist))
    dist, length = subsequence_dtw([], rand_frames(rng, 12))
    assert dist.shape == length.shape == (0,)
    # an empty reference in a batch is tolerated
    dist, length = subsequence_dtw(refs, rand_frames(rng, 12))
    assert dist.shape == length.shape == (3,)
    # a reference more than twice as long as the utterance has no path at all (max 2x
    # faster): it must score worse than any real path (cosine distance <= 2)
    dist, _ = subsequence_dtw([rand_frames(rng, 50), rand_frames(rng, 8)], rand_frames(rng, 10))
    assert dist[0] > 2.0
    assert dist[1] <= 2.0


# --- 2. log-mel features --------------------------------------------------------------------

def test_log_mel_silence_and_short_audio_give_no_frames():
    s = TemplateSettings().features
    for settings in (FeatureSettings(), s):
        assert log_mel(np.zeros(RATE, np.float32), settings).shape == (0, settings.n_mels)
        assert log_mel(np.zeros(0, np.float32), settings).shape == (0, settings.n_mels)
        short = np.random.default_rng(0).standard_normal(settings.win - 1).astype(np.float32) * 0.3
        assert log_mel(short, settings).shape == (0, settings.n_mels)


def test_log_mel_of_speech_is_trimmed_and_mean_normalised(m3_bank):
    s = TemplateSettings().features
    audio = m3_bank.speak("Zoetermeer")
    feats = log_mel(audio, s)
    assert feats.ndim == 2 and feats.shape[1] == s.n_mels and 15 <= feats.shape[0] <= 100
    assert np.all(np.isfinite(feats))
    assert np.allclose(feats.mean(axis=0), 0.0, atol=1e-4)
    # a second of digital silence either side is trimmed away (give or take a frame)
    padded = np.concatenate([np.zeros(RATE, np.float32), audio, np.zeros(RATE, np.float32)])
    assert abs(log_mel(padded, s).shape[0] - feats.shape[0]) <= 3


def test_white_noise_at_15db_snr_keeps_a_phrase_closest_to_itself(m3_bank):
    s = TemplateSettings().features
    words = ["Zoetermeer", "Harderwijk", "Wageningen", "Almere"]
    clean = {w: m3_bank.speak(w) for w in words}
    refs = [log_mel(clean[w], s) for w in words]
    for k, w in enumerate(words):
        audio = clean[w]
        frames = audio[: audio.size // 160 * 160].reshape(-1, 160)
        power = (frames ** 2).mean(axis=1)
        speech_power = power[power > power.max() * 1e-3].mean()  # active frames only
        for seed in range(2):
            noise = np.random.default_rng(seed).standard_normal(audio.size) * np.sqrt(speech_power / 10 ** 1.5)
            dist, _ = subsequence_dtw(refs, log_mel((audio + noise).astype(np.float32), s))
            others = np.delete(dist, k)
            assert dist[k] + 0.1 < others.min(), f"{w} at 15 dB SNR (seed {seed}): {dict(zip(words, dist))}"
            assert dist[k] < 0.75 * others.min()


# --- 3. the reference cache -----------------------------------------------------------------

def test_reference_bank_caches_audio_and_second_bank_does_not_speak(tmp_path, monkeypatch):
    settings = FeatureSettings(voice="nl+m6")
    phrases = ["Zoetermeer", "Alphen aan den Rijn", "Zoetermeer"]
    first = ReferenceBank(settings, tmp_path)
    feats1 = first.get(phrases)
    assert len(feats1) == 3 and len(first) == 2  # duplicates spoken once
    files = [tmp_path / settings.voice_key / (hashlib.sha1(p.encode()).hexdigest()[:20] + ".npy")
             for p in ("Zoetermeer", "Alphen aan den Rijn")]
    for f in files:
        assert f.is_file(), f"no cache file {f}"
        cached = np.load(f)
        assert cached.dtype == np.dtype("<i2") and cached.size > RATE // 4  # 8 kHz audio, not features
    assert not list((tmp_path / settings.voice_key).glob("*.tmp.npy")), "temporary files left behind"
    mtimes = [f.stat().st_mtime_ns for f in files]

    second = ReferenceBank(settings, tmp_path)  # constructed while espeak-ng is still on PATH
    other_features = ReferenceBank(FeatureSettings(voice="nl+m6", n_mels=30), tmp_path)
    empty = tmp_path / "no-tools"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # from here on espeak-ng and sox cannot run
    feats2 = second.get(phrases)
    for a, b in zip(feats1, feats2):
        assert a.shape == b.shape and np.array_equal(a, b)
    # the cache holds audio, keyed by how it is spoken: other feature settings reuse it
    feats3 = other_features.get(phrases[:2])
    assert [f.shape[1] for f in feats3] == [30, 30]
    assert [f.shape[0] for f in feats3] == [f.shape[0] for f in feats1[:2]]
    assert [f.stat().st_mtime_ns for f in files] == mtimes, "cache files were rewritten"
    # ... and the PATH trick is effective: an uncached phrase really needs espeak-ng
    with pytest.raises((FileNotFoundError, subprocess.CalledProcessError)):
        second.get(["Almere"])


def test_reference_bank_respeaks_a_corrupt_cache_file(tmp_path):
    settings = FeatureSettings(voice="nl+m6")
    original = ReferenceBank(settings, tmp_path).get(["Harderwijk"])[0]
    path = tmp_path / settings.voice_key / (hashlib.sha1(b"Harderwijk").hexdigest()[:20] + ".npy")
    path.write_bytes(b"not a numpy file")
    again = ReferenceBank(settings, tmp_path).get(["Harderwijk"])[0]
    # espeak-ng is deterministic; sox dithers (randomly) on the way to 16 bits, so the
    # re-spoken reference is the same up to dither noise, not bit for bit
    assert again.shape == original.shape
    assert np.abs(again - original).mean() < 0.1
    assert subsequence_dtw([original], again)[0][0] < 0.01
    assert np.load(path).dtype == np.dtype("<i2")  # and the cache was repaired


_CORPUS_VOICES = ("nl", "nl+f2", "nl+f4", "nl+m1", "nl+m3")  # the dev manifest's voice column


@pytest.mark.parametrize("voice", TemplateSettings().voices)
def test_reference_voices_are_distinct_from_the_corpus_voices(voice):
    # espeak-ng variant names are case-sensitive file names: "nl+Linda" once fell back to "nl"
    assert {r["voice"].split()[0] for r in dev_rows().values()} <= set(_CORPUS_VOICES)

    def spoken(v: str) -> bytes:
        return subprocess.run(["espeak-ng", "-v", v, "-s", "160", "-p", "50", "--stdout", "Zoetermeer"],
                              capture_output=True, check=True, timeout=30).stdout

    mine = spoken(voice)
    same = [v for v in _CORPUS_VOICES if spoken(v) == mine]
    assert not same, f"reference voice {voice!r} speaks exactly like corpus voice(s) {same}"


# --- 4. the engine on the development corpus -------------------------------------------------

# area codes with 3..8 municipalities (with <= 2, "ja"/"nee" compete as classes too: below)
ENGINE_ROWS = ["bare/0020.wav", "bare/0040.wav", "phrase/0071.wav", "phrase/0081.wav",
               "phrase/0087.wav", "village/0139.wav", "village/0148.wav", "former/0162.wav"]
TWO_CANDIDATE_ROWS = ["bare/0042.wav", "phrase/0057.wav", "village/0132.wav"]


def _run_row(plan, engine, path: str):
    row = dev_rows()[path]
    code, expected = row["area_code"], row["expected_cbs_code"]
    area = plan.area_codes[code]
    hyps = feed_all(engine.start(area.municipalities), read_slin(DEV / path))
    result = Matcher(plan.candidates(code)).decide(hyps)
    return row, area, plan.municipalities[expected].name, hyps, result


@pytest.mark.parametrize("path", ENGINE_ROWS)
def test_engine_recognises_dev_utterance(plan, engine, path):
    row, area, name, hyps, result = _run_row(plan, engine, path)
    assert 3 <= len(area.municipalities) <= 8
    assert hyps.final and hyps.nbest, f"{row['text']!r}: empty n-best ({engine.last_debug})"
    assert hyps.nbest[0][0] == name, f"{row['text']!r}: expected {name}, heard {engine.last_debug}"
    assert not (result.verdict is MatchVerdict.ACCEPT and result.best.cbs_code != row["expected_cbs_code"])
    assert result.verdict is not MatchVerdict.REJECT and result.best.cbs_code == row["expected_cbs_code"]
    assert engine.last_debug["decision"] in ("accept", "confirm", "choose")
    assert str(hyps.verdict) == engine.last_debug["decision"] == str(result.verdict)  # carried out as given


def test_engine_rows_cover_every_kind():
    kinds = {dev_rows()[p]["kind"] for p in ENGINE_ROWS}
    assert {"bare", "phrase", "village"} <= kinds


@pytest.mark.parametrize("path", TWO_CANDIDATE_ROWS)
def test_engine_two_candidate_area_never_misroutes(plan, engine, path):
    """With two municipalities "ja"/"nee" are classes of the question too and may come first
    (the matcher ignores them); the right municipality must still be the best *name*."""
    row, area, name, hyps, result = _run_row(plan, engine, path)
    assert len(area.municipalities) == 2
    names = [label for label, _ in hyps.nbest if label not in ("ja", "nee")]
    assert names and names[0] == name, f"{row['text']!r}: {hyps.nbest} ({engine.last_debug})"
    assert not (result.verdict is MatchVerdict.ACCEPT and result.best.cbs_code != row["expected_cbs_code"])
    assert result.verdict is MatchVerdict.REJECT or result.best.cbs_code == row["expected_cbs_code"]


@pytest.mark.parametrize("code", ["079", "0525"])
def test_engine_never_accepts_silence_or_stationary_noise(plan, engine, code):
    area = plan.area_codes[code]
    matcher = Matcher(plan.candidates(code))
    n = int(1.5 * RATE)
    inputs = {"digital silence": np.zeros(n, np.float32)}
    for amp in (0.003, 0.03, 0.3):
        inputs[f"white noise rms {amp}"] = np.random.default_rng(7).standard_normal(n).astype(np.float32) * amp
    for label, audio in inputs.items():
        hyps = feed_all(engine.start(area.municipalities), to_slin(audio))
        result = matcher.decide(hyps)
        assert result.verdict is not MatchVerdict.ACCEPT, f"{code}, {label}: {hyps.nbest} {engine.last_debug}"


def _noise_bursts(seed: int) -> np.ndarray:
    """1.5 s: three bursts (100-375 ms) of white noise at rms 0.1 over a faint noise floor,
    between 0.5 s and 1 s of digital silence - a door, a rustle, a cough on the line."""
    rng = np.random.default_rng(seed)
    n = int(1.5 * RATE)
    envelope = np.zeros(n)
    for _ in range(3):
        start = rng.integers(0, n - 2000)
        envelope[start: start + rng.integers(800, 3000)] = 1.0
    noise = rng.standard_normal(n) * 0.1 * envelope + rng.standard_normal(n) * 0.003
    return np.concatenate([np.zeros(RATE // 2), noise, np.zeros(RATE)]).astype(np.float32)


def test_engine_never_accepts_noise_bursts_through_the_live_path(plan, engine):
    code = "0341"  # Ermelo, Harderwijk, Nunspeet, Putten
    area = plan.area_codes[code]
    matcher = Matcher(plan.candidates(code))
    accepted = []
    for seed in range(3):
        result, hyps, _, endpoint = decide(engine, matcher, area.municipalities, to_slin(_noise_bursts(seed)))
        if result is not None and result.verdict is MatchVerdict.ACCEPT:
            accepted.append((seed, endpoint, result.best.name, engine.last_debug))
    assert not accepted, f"noise accepted as a municipality: {accepted}"


# --- 5. yes/no ---------------------------------------------------------------------------------

@pytest.mark.parametrize("said, expected", [("ja", "ja"), ("nee", "nee")])
def test_engine_yes_no_question(engine, m3_bank, said, expected):
    hyps = feed_all(engine.start([]), to_slin(m3_bank.speak(said)))
    assert hyps.nbest, engine.last_debug
    assert {label for label, _ in hyps.nbest} <= {"ja", "nee"}
    assert hyps.nbest[0][0] == expected, f"{said!r}: {hyps.nbest} ({engine.last_debug})"
    assert engine.last_debug["decision"] is None and hyps.verdict is None  # a yes/no answer is read, not decided


def test_an_unknown_voice_variant_is_refused_not_replaced_by_the_plain_voice(tmp_path):
    from ivr.speech.base import RecogniserError

    with pytest.raises(RecogniserError, match="case-sensitive"):
        ReferenceBank(FeatureSettings(voice="nl+Linda"), tmp_path).check_voice()
    ReferenceBank(FeatureSettings(voice="nl+linda"), tmp_path).check_voice()


def test_a_filled_pause_before_the_name_is_waited_for(plan, engine, m3_bank):
    """ "ehm ... Gorinchem" (a corpus voice, half a second's pause after "ehm"): the
    endpointer asks the engine, hears a filled pause, and the name decides the call."""
    from ivr_lab.replay import decide
    from ivr.speech.endpoint import Endpointer

    pause = np.zeros(4000, np.float32)
    audio = np.concatenate([pause, m3_bank.speak("ehm"), pause, m3_bank.speak("Gorinchem"), pause, pause])
    assert engine.is_hesitation(to_slin(m3_bank.speak("ehm")))
    assert not engine.is_hesitation(to_slin(m3_bank.speak("Gorinchem")))
    code = "0183"
    endpointer = Endpointer(hesitation=engine.is_hesitation)
    result, hyps, _, _ = decide(engine, Matcher(plan.candidates(code)), plan.area_codes[code].municipalities,
                                to_slin(audio), endpointer)
    assert endpointer.held == 1
    assert result is not None and result.best.cbs_code == "GM0512", engine.last_debug


class _Opinion:
    """A scripted second opinion (pure re-ranking logic; the real one is Whisper)."""

    def __init__(self, scores=None, fail=False):
        self.scores, self.fail, self.asked = scores, fail, []

    def score_phrases(self, audio_8k, phrases):
        self.asked.append(list(phrases))
        if self.fail:
            raise RuntimeError("model gone")
        return np.asarray(self.scores[: len(phrases)], float)


def test_second_opinion_reranks_only_the_close_candidates(plan, cache_dir):
    engine = TemplateEngine(plan, cache_dir=cache_dir, second_opinion=_Opinion([0.0, 50.0, 0.0]))
    scores = -np.array([0.30, 0.31, 0.32, 0.50])  # higher = closer
    best_phrase = {0: "Goes", 1: "Kapelle", 2: "Borsele", 3: "Reimerswaal"}
    out = engine._second_opinion(np.zeros(8000, np.float32), scores, [0, 1, 2], best_phrase)
    assert engine.second_opinion.asked == [["Goes", "Kapelle", "Borsele"]]
    assert int(np.argmax(out)) == 1  # the opinion's clear favourite leads now
    assert sorted(out[:3]) == sorted(scores[:3]) and out[3] == scores[3]  # same values, new order


def test_a_failing_second_opinion_keeps_the_template_ranking(plan, cache_dir):
    engine = TemplateEngine(plan, cache_dir=cache_dir, second_opinion=_Opinion(fail=True))
    scores = -np.array([0.30, 0.31, 0.32])
    out = engine._second_opinion(np.zeros(8000, np.float32), scores, [0, 1, 2], {0: "a", 1: "b", 2: "c"})
    assert np.array_equal(out, scores)
