"""Text of the HLSM: render prompts and traces, tokenize, parse model output, verify and reward.

Formats (docs/design.md §formats), for an input ``abcd`` and a depth-2 composition (chain reverse, then
skip shift_up) whose values are ``dcba`` then ``bcde``:

    prompt     abcd|R0S00 R2S09>
    explicit   R0S00=dcba;R2S09=bcde;#bcde       each step shows its module tokens and value
    values     dcba;bcde;#bcde                   values only: the modules stay latent
    answer     #bcde                             no trace

``granularity`` g groups steps into chunks of g: a golden trace then shows one value per chunk
(the chunk's last), and in ``explicit`` the chunk's module tokens together ("entangled" compound
steps). The completion the model must write is everything after the prompt; the tokenizer adds
``<eos>``. Module tokens (``S00``..``S23``, ``R0``..``R9``) are single tokens, every other
character is one token.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from hlsm.modules import ROUTING_BY_TOKEN, ROUTINGS, SKILL_BY_TOKEN, SKILLS

FORMATS = ("explicit", "values", "answer")
CHUNK_SEP = "/"  # a per-support format "explicit/3": the explicit format in chunks of 3 steps
# the forms a completion can take, whatever format its training showed (``trace_form``): every step
# written out with its modules, every step's value alone, fewer chunks than steps, no trace, other
FORMS = ("explicit", "values", "chunked", "answer", "other")
VOCAB_FILE = Path(__file__).with_name("vocab.json")
ANSWER_MARK = "#"
_TOKEN_RE = re.compile(r"R\d|S\d\d|.", re.S)
_EXPLICIT_CHUNK = re.compile(r"((?:R\dS\d\d)+)=([a-z]*)")
_VALUE = re.compile(r"[a-z]*")
_WORD = re.compile(r"[a-z]+")  # a value as the sampler writes one: never empty


def check_format(fmt: str, granularity: int = 1) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown trace format {fmt!r}; allowed: {', '.join(FORMATS)}")
    if not isinstance(granularity, int) or granularity < 1:
        raise ValueError(f"granularity must be an integer >= 1, got {granularity!r}")


def trace_format(spec) -> tuple[str, int]:
    """(format, granularity) of a format spec: a format ("explicit", "values", "answer") or
    ``<format>/<g>``, chunks of g steps ("explicit/3": each chunk's module tokens together and only its
    last value, the atoms inside hidden). A bad spec is a ValueError naming it and what is allowed."""
    fmt, sep, g = str(spec).partition(CHUNK_SEP)
    if fmt not in FORMATS or (sep and (not g.isdigit() or int(g) < 1 or fmt == "answer")):
        raise ValueError(f"unknown trace format {spec!r}; allowed: {', '.join(FORMATS)}, or explicit/<g> or "
                         f"values/<g> for chunks of g >= 1 steps")
    return fmt, int(g) if sep else 1


def format_kw(formats: dict, support: str, fmt: str, granularity: int) -> dict:
    """{"fmt", "granularity"} a support's items are rendered in: its entry of ``formats`` (a run's per-support
    trace formats, ``SFTConfig.formats``) or the run's ``fmt`` / ``granularity``. SFT, GRPO's prompts and
    replay, the controls and every evaluation read it here."""
    f, g = trace_format(formats[support]) if support in formats else (fmt, granularity)
    return {"fmt": f, "granularity": g}


def trace_form(text, depth: int) -> str:
    """The form (``FORMS``) a completion of a depth-``depth`` prompt takes, read off the text alone:
    "explicit" (one ``modules=value`` chunk per step, one module pair each), "values" (one value per
    step), "chunked" (fewer chunks than steps: explicit chunks whose module pairs add up to the depth, or
    values; a values trace that skips steps reads the same), "answer" (only ``#answer``), "other"
    (anything else: no answer mark, empty values, a mix of chunk kinds, explicit chunks naming more or
    fewer modules than steps, more chunks than steps, garbage). Whether it is right is the verifier's
    business, not this one's."""
    if not isinstance(text, str) or ANSWER_MARK not in text:
        return "other"
    cut = text.rfind(ANSWER_MARK)
    trace, answer = text[:cut], text[cut + 1 :]
    if _WORD.fullmatch(answer) is None:
        return "other"
    if trace == "":
        return "answer"
    pieces = trace.split(";")
    if pieces[-1] != "" or len(pieces) < 2:
        return "other"
    pairs = []  # module pairs per explicit chunk
    for piece in pieces[:-1]:
        m = _EXPLICIT_CHUNK.fullmatch(piece)
        if m is not None and m.group(2):
            pairs.append(len(_TOKEN_RE.findall(m.group(1))) // 2)
        elif _WORD.fullmatch(piece) is None:
            return "other"
    n = len(pieces) - 1
    if (pairs and len(pairs) < n) or n > depth:
        return "other"  # value chunks beside explicit ones, or more chunks than steps
    if pairs and sum(pairs) != depth:
        return "other"  # explicit chunks that skip or add steps
    if n < depth:
        return "chunked"
    return "explicit" if pairs else "values"


def render(x: str, steps, fmt: str = "values", granularity: int = 1):
    """Render one item. ``steps`` is a sequence of (routing, skill, value).

    Returns (prompt, completion, spans, prompt_spans): ``spans[t]`` is the (start, end) character
    span of step t's chunk in the completion (None in the ``answer`` format) and
    ``prompt_spans[t]`` the span of its module tokens in the prompt.
    """
    toks = [ROUTINGS[r].token + SKILLS[s].token for r, s, _ in steps]
    return render_tokens(x, toks, [v for _, _, v in steps], fmt, granularity)


def render_tokens(x: str, toks: list[str], values: list[str], fmt: str, granularity: int):
    """``render`` with each step given as its module-token string ("R0S03") and value (hot path)."""
    prompt = x + "|" + " ".join(toks) + ">"
    prompt_spans, pos = [], len(x) + 1
    for tok in toks:
        prompt_spans.append((pos, pos + len(tok)))
        pos += len(tok) + 1
    answer = values[-1]
    if fmt == "answer":
        return prompt, ANSWER_MARK + answer, [None] * len(values), prompt_spans
    out, spans, pos, n = [], [], 0, len(values)
    for c in range(0, n, granularity):
        last = min(c + granularity, n) - 1
        seg = values[last] if fmt == "values" else "".join(toks[c : last + 1]) + "=" + values[last]
        spans.extend([(pos, pos + len(seg))] * (last + 1 - c))
        out.append(seg)
        pos += len(seg) + 1
    out.append(ANSWER_MARK + answer)
    return prompt, ";".join(out), spans, prompt_spans


def expected_chunks(example) -> list[tuple[tuple[tuple[str, str], ...] | None, str]]:
    """The chunks a golden trace of ``example`` shows: (modules or None, value) each."""
    if example.format == "answer":
        return []
    g, steps, out = example.granularity, example.steps, []
    for c in range(0, len(steps), g):
        chunk = steps[c : c + g]
        mods = tuple((st.routing, st.skill) for st in chunk) if example.format == "explicit" else None
        out.append((mods, chunk[-1].value))
    return out


# --- tokenizer ------------------------------------------------------------------------------

SPECIALS = ("<pad>", "<bos>", "<eos>")


class Tokenizer:
    """Character-level tokenizer with whole-word module tokens and a fixed vocabulary file."""

    def __init__(self, vocab_file: str | Path = VOCAB_FILE):
        self.vocab: list[str] = json.loads(Path(vocab_file).read_text())
        self.ids = {t: i for i, t in enumerate(self.vocab)}
        if len(self.ids) != len(self.vocab):
            raise ValueError(f"duplicate tokens in vocabulary file {vocab_file}")
        missing = [t for t in (*SPECIALS, *SKILL_BY_TOKEN, *ROUTING_BY_TOKEN) if t not in self.ids]
        if missing:
            raise ValueError(f"vocabulary file {vocab_file} lacks tokens {missing}")
        self.pad_id, self.bos_id, self.eos_id = (self.ids[t] for t in SPECIALS)

    def __len__(self) -> int:
        return len(self.vocab)

    def tokens(self, text: str) -> list[str]:
        return _TOKEN_RE.findall(text)

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        """Token ids of ``text``; a ValueError names any character outside the vocabulary."""
        ids = self.ids
        try:
            out = [ids[t] for t in _TOKEN_RE.findall(text)]
        except KeyError as e:
            raise ValueError(f"character {e.args[0]!r} of {text!r} is not in the vocabulary") from None
        if bos:
            out.insert(0, self.bos_id)
        if eos:
            out.append(self.eos_id)
        return out

    def encode_item(self, example) -> tuple[list[int], int]:
        """``<bos> prompt completion <eos>`` of an item as ids, and the prompt's length (with <bos>):
        the one layout every trainer, evaluator and probe feeds the policy."""
        prompt = self.encode(example.prompt, bos=True)
        return prompt + self.encode(example.completion, eos=True), len(prompt)

    def decode(self, ids, stop_at_eos: bool = True) -> str:
        """Text of ``ids``: specials dropped, cut at the first ``<eos>``; unknown ids ignored."""
        out, n = [], len(self.vocab)
        for i in ids:
            i = int(i)
            if i == self.eos_id and stop_at_eos:
                break
            if 0 <= i < n and i >= len(SPECIALS):
                out.append(self.vocab[i])
        return "".join(out)

    def offsets(self, text: str) -> list[tuple[int, int]]:
        """(start, end) character offsets of each token of ``text``."""
        return [m.span() for m in _TOKEN_RE.finditer(text)]

    def token_span(self, text: str, span: tuple[int, int]) -> tuple[int, int]:
        """The token index span [i, j) covering character span ``span`` of ``text``."""
        offs = self.offsets(text)
        i = next(k for k, (s, e) in enumerate(offs) if e > span[0])
        j = next((k for k, (s, e) in enumerate(offs) if s >= span[1]), len(offs))
        return i, j


def write_vocab(path: str | Path = VOCAB_FILE) -> list[str]:
    """(Re)write the fixed vocabulary file; run once when the module inventory changes."""
    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("|>=;# ")
    vocab = [*SPECIALS, *chars, *SKILL_BY_TOKEN, *ROUTING_BY_TOKEN]
    Path(path).write_text(json.dumps(vocab, indent=0) + "\n")
    return vocab


# --- parsing model output -------------------------------------------------------------------


@dataclass
class Parsed:
    """What a completion says: its trace chunks, its answer, and whether it is well formed.

    ``chunks[i]`` is (modules, value): modules a tuple of (routing, skill) in ``explicit``, None
    otherwise; value None where the chunk could not be read.
    """

    chunks: list
    answer: str | None
    well_formed: bool


def parse_completion(text, fmt: str = "values") -> Parsed:
    """Parse a model completion; never raises on the text (garbage gives ``well_formed=False``).

    An unknown ``fmt`` is the caller's error, not the model's: a ValueError naming it.
    """
    check_format(fmt)
    if not isinstance(text, str):
        return Parsed([], None, False)
    cut = text.rfind(ANSWER_MARK)
    if cut < 0:
        return Parsed([], None, False)
    trace, answer = text[:cut], text[cut + 1 :]
    ok = _VALUE.fullmatch(answer) is not None
    if fmt == "answer":
        return Parsed([], answer, ok and trace == "")
    pieces = trace.split(";")
    ok = ok and pieces[-1] == "" and len(pieces) > 1
    chunks = []
    for piece in pieces[:-1] if pieces[-1] == "" else pieces:
        if fmt == "explicit":
            m = _EXPLICIT_CHUNK.fullmatch(piece)
            if m is None:
                chunks.append((None, None))
                ok = False
                continue
            toks = _TOKEN_RE.findall(m.group(1))
            mods = tuple(
                (ROUTING_BY_TOKEN[toks[k]].name, SKILL_BY_TOKEN[toks[k + 1]].name)
                for k in range(0, len(toks), 2)
                if toks[k] in ROUTING_BY_TOKEN and toks[k + 1] in SKILL_BY_TOKEN
            )
            if len(mods) * 2 != len(toks):
                chunks.append((None, m.group(2)))
                ok = False
                continue
            chunks.append((mods, m.group(2)))
        else:
            if _VALUE.fullmatch(piece) is None:
                chunks.append((None, None))
                ok = False
            else:
                chunks.append((None, piece))
    return Parsed(chunks, answer, ok)


# --- verifiers and rewards ------------------------------------------------------------------


def _check_example(example) -> None:
    if not all(hasattr(example, k) for k in ("answer", "format", "steps")):
        raise ValueError(f"example must be an hlsm Example (from HLSM.sample), got {type(example).__name__}")


def answer_reward(example, completion) -> float:
    """1.0 iff the completion's answer (after the last ``#``) equals the example's answer."""
    _check_example(example)
    p = parse_completion(completion, example.format)
    return 1.0 if p.answer is not None and p.answer == example.answer else 0.0


def format_reward(example, completion) -> float:
    """1.0 iff the completion is well formed in the example's format with the right chunk count."""
    _check_example(example)
    p = parse_completion(completion, example.format)
    return 1.0 if p.well_formed and len(p.chunks) == len(expected_chunks(example)) else 0.0


def structure_reward(example, completion) -> float:
    """Composite structural reward: the fraction of trace chunks that are right.

    A chunk is right when its value is right and, in ``explicit``, its modules are right; chunks
    are matched by position and the denominator is max(expected, written) so padding never pays.
    In the ``answer`` format (no trace) this is the answer reward.
    """
    _check_example(example)
    want = expected_chunks(example)
    if not want:
        return answer_reward(example, completion)
    got = parse_completion(completion, example.format).chunks
    right = sum(
        1
        for (wm, wv), (gm, gv) in zip(want, got)
        if gv == wv and (wm is None or gm == wm)
    )
    return right / max(len(want), len(got))


REWARDS = {"answer": answer_reward, "format": format_reward, "structure": structure_reward}


def score(example, completion) -> float:
    """1.0 iff the completion's answer is right (the exact verifier); garbage scores 0."""
    return answer_reward(example, completion)
