"""The atomic modules of the HLSM: 24 skills and 10 routing mechanisms.

A *skill* is a local string operation ``str -> str``. A *routing mechanism* decides which earlier
values ``h_0 = x, h_1, ..., h_{t-1}`` feed step ``t`` and how they are combined around the skill.
Every module is pure, deterministic and total (any ``str`` in, a ``str`` of at most ``MAX_LEN``
characters out), and is registered under a stable name and a stable opaque token (``S00``..``S23``,
``R0``..``R9``) that prompts use to name it without defining it.

Skills act on the lowercase letters ``a``-``z``; any other character passes through the letter maps
unchanged, so every function is total on every string.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass

MAX_LEN = 12  # every module output is truncated to this many characters: traces stay short
LETTERS = string.ascii_lowercase
VOWELS = "aeiou"

_SHIFT_UP = str.maketrans(LETTERS, LETTERS[1:] + LETTERS[:1])
_SHIFT_DOWN = str.maketrans(LETTERS, LETTERS[-1:] + LETTERS[:-1])
_ATBASH = str.maketrans(LETTERS, LETTERS[::-1])
_NEXT_VOWEL = str.maketrans(VOWELS, VOWELS[1:] + VOWELS[:1])


@dataclass(frozen=True)
class Skill:
    """A local string operation, registered under ``name`` and named in prompts by ``token``."""

    name: str
    token: str
    fn: Callable[[str], str]
    doc: str

    def apply(self, s: str) -> str:
        return self.fn(s)

    __call__ = apply


@dataclass(frozen=True)
class Routing:
    """How step ``t`` selects and combines earlier values around its skill.

    ``operands(t)`` gives the indices (into ``h_0..h_{t-1}``) the step reads; ``apply(values,
    skill)`` computes the step's value from exactly those operand values.
    """

    name: str
    token: str
    operands: Callable[[int], tuple[int, ...]]
    fn: Callable[[Sequence[str], Callable[[str], str]], str]
    doc: str

    def apply(self, values: Sequence[str], skill: Skill | Callable[[str], str]) -> str:
        return self.fn(values, skill)

    __call__ = apply


SKILLS: dict[str, Skill] = {}
ROUTINGS: dict[str, Routing] = {}


def _skill(fn: Callable[[str], str]) -> Callable[[str], str]:
    name = fn.__name__
    SKILLS[name] = Skill(name, f"S{len(SKILLS):02d}", fn, (fn.__doc__ or "").strip())
    return fn


def _routing(operands: Callable[[int], tuple[int, ...]]):
    def register(fn):
        name = fn.__name__.removeprefix("route_")
        ROUTINGS[name] = Routing(name, f"R{len(ROUTINGS)}", operands, fn, (fn.__doc__ or "").strip())
        return fn

    return register


# --- skills: permutations -------------------------------------------------------------------


@_skill
def reverse(s: str) -> str:
    """Reverse the string: abcd -> dcba."""
    return s[::-1][:MAX_LEN]


@_skill
def rotate_left(s: str) -> str:
    """Move the first character to the end: abcd -> bcda."""
    return (s[1:] + s[:1])[:MAX_LEN]


@_skill
def rotate_right(s: str) -> str:
    """Move the last character to the front: abcd -> dabc."""
    return (s[-1:] + s[:-1])[:MAX_LEN]


@_skill
def swap_pairs(s: str) -> str:
    """Swap adjacent pairs; an odd last character stays: abcde -> badce."""
    out = [s[i + 1] + s[i] for i in range(0, len(s) - 1, 2)]
    return ("".join(out) + (s[-1] if len(s) % 2 else ""))[:MAX_LEN]


@_skill
def swap_ends(s: str) -> str:
    """Swap the first and last characters: abcd -> dbca."""
    if len(s) < 2:
        return s[:MAX_LEN]
    return (s[-1] + s[1:-1] + s[0])[:MAX_LEN]


@_skill
def swap_halves(s: str) -> str:
    """Swap the two halves (first half is len//2 long): abcde -> cdeab."""
    h = len(s) // 2
    return (s[h:] + s[:h])[:MAX_LEN]


@_skill
def riffle(s: str) -> str:
    """Perfect shuffle: interleave the first ceil-half with the rest: abcdef -> adbecf."""
    h = (len(s) + 1) // 2
    a, b = s[:h], s[h:]
    return ("".join(x + y for x, y in zip(a, b)) + a[len(b):])[:MAX_LEN]


@_skill
def sort_asc(s: str) -> str:
    """Sort the characters ascending: dbca -> abcd."""
    return "".join(sorted(s))[:MAX_LEN]


@_skill
def sort_desc(s: str) -> str:
    """Sort the characters descending: bdac -> dcba."""
    return "".join(sorted(s, reverse=True))[:MAX_LEN]


# --- skills: letter maps --------------------------------------------------------------------


@_skill
def shift_up(s: str) -> str:
    """Caesar shift each letter by +1, z wraps to a: abz -> bca."""
    return s.translate(_SHIFT_UP)[:MAX_LEN]


@_skill
def shift_down(s: str) -> str:
    """Caesar shift each letter by -1, a wraps to z: bca -> abz."""
    return s.translate(_SHIFT_DOWN)[:MAX_LEN]


@_skill
def atbash(s: str) -> str:
    """Mirror each letter in the alphabet (a<->z, b<->y): abc -> zyx."""
    return s.translate(_ATBASH)[:MAX_LEN]


@_skill
def next_vowel(s: str) -> str:
    """Replace each vowel by the next vowel (a->e->i->o->u->a): bead -> bied."""
    return s.translate(_NEXT_VOWEL)[:MAX_LEN]


@_skill
def shift_by_index(s: str) -> str:
    """Shift the letter at position i by +i (Vigenere by position): aaaa -> abcd."""
    out = []
    for i, c in enumerate(s[:MAX_LEN]):
        k = ord(c) - 97
        out.append(chr((k + i) % 26 + 97) if 0 <= k < 26 else c)
    return "".join(out)


# --- skills: length changes -----------------------------------------------------------------


@_skill
def drop_first(s: str) -> str:
    """Delete the first character: abcd -> bcd."""
    return s[1:][:MAX_LEN]


@_skill
def drop_last(s: str) -> str:
    """Delete the last character: abcd -> abc."""
    return s[:-1][:MAX_LEN]


@_skill
def dup_first(s: str) -> str:
    """Duplicate the first character: abc -> aabc."""
    return (s[:1] + s)[:MAX_LEN]


@_skill
def dup_last(s: str) -> str:
    """Duplicate the last character: abc -> abcc."""
    return (s + s[-1:])[:MAX_LEN]


@_skill
def first_half(s: str) -> str:
    """Keep the first ceil(n/2) characters: abcde -> abc."""
    return s[: (len(s) + 1) // 2][:MAX_LEN]


@_skill
def second_half(s: str) -> str:
    """Keep the last floor(n/2) characters: abcde -> de."""
    return s[(len(s) + 1) // 2 :][:MAX_LEN]


@_skill
def evens(s: str) -> str:
    """Keep the characters at even positions 0, 2, 4, ...: abcde -> ace."""
    return s[::2][:MAX_LEN]


@_skill
def mirror(s: str) -> str:
    """Append the reverse (a palindrome, truncated to MAX_LEN): abc -> abccba."""
    return (s + s[::-1])[:MAX_LEN]


@_skill
def dedupe_runs(s: str) -> str:
    """Collapse runs of a repeated character to one: aabbba -> aba."""
    out = [c for i, c in enumerate(s) if i == 0 or c != s[i - 1]]
    return "".join(out)[:MAX_LEN]


@_skill
def unique(s: str) -> str:
    """Keep only the first occurrence of each character: abcab -> abc."""
    return "".join(dict.fromkeys(s))[:MAX_LEN]


# --- routing mechanisms ---------------------------------------------------------------------
# Operand indices are into h_0..h_{t-1}; where a step would reach before h_0 it reads h_0.


def _prev(t: int) -> tuple[int, ...]:
    return (t - 1,)


def _two_back(t: int) -> tuple[int, ...]:
    return (max(t - 2, 0),)


def _prev_two(t: int) -> tuple[int, ...]:
    return (max(t - 2, 0), t - 1)


def _input_and_prev(t: int) -> tuple[int, ...]:
    return (0, t - 1)


def _input(t: int) -> tuple[int, ...]:
    return (0,)


def _interleave(a: str, b: str) -> str:
    n = min(len(a), len(b))
    return "".join(x + y for x, y in zip(a, b)) + a[n:] + b[n:]


@_routing(_prev)
def route_chain(v, skill):
    """Apply the skill to the previous value h_{t-1}."""
    return skill(v[0])[:MAX_LEN]


@_routing(_input)
def route_reuse_input(v, skill):
    """Apply the skill to the original input h_0, ignoring intermediate results."""
    return skill(v[0])[:MAX_LEN]


@_routing(_two_back)
def route_skip(v, skill):
    """Apply the skill to h_{t-2}, skipping the latest result (h_0 when t < 2)."""
    return skill(v[0])[:MAX_LEN]


@_routing(_prev_two)
def route_concat(v, skill):
    """Apply the skill to the concatenation h_{t-2} + h_{t-1}, cut to 12 characters first."""
    return skill((v[0] + v[1])[:MAX_LEN])[:MAX_LEN]


@_routing(_input_and_prev)
def route_interleave(v, skill):
    """Apply the skill to the character interleaving of h_0 with h_{t-1}, cut to 12 characters first."""
    return skill(_interleave(v[0], v[1])[:MAX_LEN])[:MAX_LEN]


@_routing(_prev_two)
def route_longer(v, skill):
    """Apply the skill to the longer of h_{t-2}, h_{t-1} (h_{t-1} on a tie)."""
    return skill(v[0] if len(v[0]) > len(v[1]) else v[1])[:MAX_LEN]


@_routing(_prev_two)
def route_shorter(v, skill):
    """Apply the skill to the shorter of h_{t-2}, h_{t-1} (h_{t-1} on a tie)."""
    return skill(v[0] if len(v[0]) < len(v[1]) else v[1])[:MAX_LEN]


@_routing(_prev)
def route_if_even(v, skill):
    """Apply the skill to h_{t-1} if its length is even, else pass h_{t-1} through unchanged."""
    return (skill(v[0]) if len(v[0]) % 2 == 0 else v[0])[:MAX_LEN]


@_routing(_prev)
def route_map_halves(v, skill):
    """Split h_{t-1} into halves (first is len//2), apply the skill to each, concatenate."""
    h = len(v[0]) // 2
    return (skill(v[0][:h]) + skill(v[0][h:]))[:MAX_LEN]


@_routing(_prev)
def route_twice(v, skill):
    """Apply the skill twice to h_{t-1}."""
    return skill(skill(v[0]))[:MAX_LEN]


assert len(SKILLS) == 24 and len(ROUTINGS) == 10, (len(SKILLS), len(ROUTINGS))

SKILL_NAMES: tuple[str, ...] = tuple(SKILLS)
ROUTING_NAMES: tuple[str, ...] = tuple(ROUTINGS)
SKILL_BY_TOKEN = {sk.token: sk for sk in SKILLS.values()}
ROUTING_BY_TOKEN = {r.token: r for r in ROUTINGS.values()}


def check_skills(names) -> tuple[str, ...]:
    """Validate skill names; a ValueError names the bad value and what is allowed."""
    return _check(names, SKILLS, "skill")


def check_routings(names) -> tuple[str, ...]:
    """Validate routing names; a ValueError names the bad value and what is allowed."""
    return _check(names, ROUTINGS, "routing")


def _check(names, registry, kind) -> tuple[str, ...]:
    if isinstance(names, str):
        names = (names,)
    names = tuple(names)
    for n in names:
        if n not in registry:
            raise ValueError(f"unknown {kind} {n!r}; allowed: {', '.join(registry)}")
    if not names:
        raise ValueError(f"empty {kind} list; choose from: {', '.join(registry)}")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate {kind} names in {names!r}")
    return names
