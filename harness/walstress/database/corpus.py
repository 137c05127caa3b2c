"""Deterministic synthetic chat data: sessions and messages of an AI agent.

A :class:`Corpus` draws everything from its own ``random.Random(seed)``: the
same seed gives the same sequence of sessions and messages in any process.
Processes that write to one database should use different seeds (for
example ``run_seed * 1000 + worker_index``), otherwise they produce the same
session ids.

What the text looks like:

* words come from a fixed vocabulary (common English words, technical words
  and a few thousand pronounceable pseudo-words) with a Zipf-like frequency;
* user messages are a few short sentences (tens of words); assistant
  messages are paragraphs, sometimes with a fenced code block (hundreds of
  words); tool outputs are 1-16 KiB of file listings, JSON, logs, source
  files or page text, so their rows spill onto overflow pages;
* roles come in a realistic order: an assistant message may carry
  ``tool_calls`` (a JSON string) and the next messages of that session are
  the matching ``tool`` results.

Speed: the vocabulary and pools of ready-made sentences, log lines, listing
lines, JSON records and code snippets are built once per process from a
fixed seed; a message is assembled by drawing from those pools with
``Random.choices(k=...)``. 100,000 messages take a few seconds.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import pickle
import random
import sys
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Any

from walstress.database.cachedir import default_cache_dir

__all__ = ["Corpus", "ROLES", "SOURCES", "TOOL_NAMES", "MODELS"]

ROLES = ("user", "assistant", "tool", "system")
SOURCES = ("cli", "telegram", "discord", "cron", "web")
_SOURCE_WEIGHTS = (40, 20, 15, 10, 15)
MODELS = (
    "claude-sonnet-4",
    "claude-opus-4",
    "gpt-4o",
    "gpt-4.1-mini",
    "gemini-2.5-pro",
    "llama-3.3-70b",
    "qwen3-32b",
    "hermes-3-405b",
)
_MODEL_WEIGHTS = (30, 10, 20, 10, 10, 8, 6, 6)
TOOL_NAMES = (
    "terminal",
    "read_file",
    "write_file",
    "search_files",
    "web_search",
    "web_extract",
    "list_directory",
    "execute_code",
    "memory",
    "send_message",
)

# Epoch of the corpus clock (2025-01-01T00:00:00Z); session start times
# advance from here when the caller gives none.
_EPOCH = 1_735_689_600.0
# Seed of the shared vocabulary and pools; independent of the corpus seed so
# that search terms are valid for every corpus.
_POOL_SEED = 0x5EED_C0DE

_COMMON_WORDS = """
the of and to a in is it you that he was for on are with as i his they be at one have
this from or had by not word but what some we can out other were all there when up use
your how said an each she which do their time if will way about many then them write
would like so these her long make thing see him two has look more day could go come did
number sound no most people my over know water than call first who may down side been
now find any new work part take get place made live where after back little only round
year came show every good me give our under name very through just form sentence great
think say help low line differ turn cause much mean before move right boy old too same
tell does set three want air well also play small end put home read hand port large
spell add even land here must big high such follow act why ask men change went light
kind off need house picture try us again point mother world near build self earth
father head stand own page should country found answer school grow study still learn
plant cover food sun four between state keep eye never last let thought city tree cross
farm hard start might story saw far sea draw left late run while press close night real
life few north open seem together next white children begin got walk example ease paper
group always music those both mark often letter until mile river car feet care second
book carry took science eat room friend began idea fish mountain stop once base hear
horse cut sure watch color face wood main enough plain girl usual young ready above ever
red list though feel talk bird soon body dog family direct pose leave song measure door
product black short numeral class wind question happen complete ship area half rock
order fire south problem piece told knew pass since top whole king space heard best hour
better true during hundred five remember step early hold west ground interest reach fast
verb sing listen six table travel less morning ten simple several vowel toward war lay
against pattern slow center love person money serve appear road map rain rule govern
pull cold notice voice unit power town fine certain fly fall lead cry dark machine note
wait plan figure star box noun field rest correct able pound done beauty drive stood
contain front teach week final gave green quick develop ocean warm free minute strong
""".split()

_TECH_WORDS = """
file error function database query index table session message token model request
response server client config value string integer return import module package test
build deploy commit branch merge version update delete insert select schema column row
cache memory thread process lock timeout retry checkpoint journal page cursor transaction
log debug warning exception stack trace path directory script command terminal output
input user assistant tool search result json yaml python shell docker container network
socket port host api endpoint key secret environment variable default option argument
parameter list dict object class method instance attribute field record batch queue
worker task job schedule cron gateway webhook channel telegram discord bot agent prompt
context window summary title content payload header status code latency throughput disk
sqlite wal fts trigram vacuum integrity corrupt backup restore migration
""".split()

_ONSETS = (
    "b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w",
    "z", "br", "cr", "dr", "fl", "gr", "kl", "pr", "st", "tr", "sh", "ch", "th", "sp", "qu",
)  # fmt: skip
_NUCLEI = ("a", "e", "i", "o", "u", "ai", "ea", "ou", "io", "y")
_CODAS = ("", "", "", "", "", "n", "r", "s", "t", "l", "m", "x", "nd", "rk", "st")

_PSEUDO_WORD_COUNT = 3500


class _Pools:
    """Vocabulary and ready-made text fragments, built once per process."""

    def __init__(self) -> None:
        rng = random.Random(_POOL_SEED)
        words: list[str] = []
        seen: set[str] = set()
        for word in itertools.chain(_COMMON_WORDS, _TECH_WORDS):
            if word not in seen:
                seen.add(word)
                words.append(word)
        real_word_count = len(words)
        while len(words) < real_word_count + _PSEUDO_WORD_COUNT:
            syllables = rng.choice((1, 2, 2, 2, 3, 3))
            word = "".join(
                rng.choice(_ONSETS) + rng.choice(_NUCLEI) + rng.choice(_CODAS)
                for _ in range(syllables)
            )
            if word not in seen and 3 <= len(word) <= 11:
                seen.add(word)
                words.append(word)
        # Interleave: the most common English words first, then real and
        # pseudo-words mixed, so pseudo-words also get high ranks.
        head, real_rest = words[:60], words[60:real_word_count]
        pseudo = words[real_word_count:]
        rng.shuffle(real_rest)
        mixed: list[str] = []
        pseudo_iter = iter(pseudo)
        for word in real_rest:
            mixed.append(word)
            mixed.extend(itertools.islice(pseudo_iter, 5))
        mixed.extend(pseudo_iter)
        self.words: list[str] = head + mixed
        # Zipf-Mandelbrot weights: w(rank) = 1 / (rank + 2.7) ** 1.05
        self.word_cum_weights: list[float] = list(
            itertools.accumulate(1.0 / (rank + 2.7) ** 1.05 for rank in range(len(self.words)))
        )
        self.pseudo_words: list[str] = pseudo
        self.identifiers: list[str] = [w for w in self.words[60:] if len(w) <= 10]

        self.sentences = [self._sentence(rng) for _ in range(16384)]
        self.code_snippets = [self._code_snippet(rng) for _ in range(1024)]
        self.code_snippets_text = [code for _, code in self.code_snippets]
        self.paths = [self._path(rng) for _ in range(4096)]
        self.log_lines = [self._log_line(rng) for _ in range(8192)]
        self.listing_lines = [self._listing_line(rng) for _ in range(8192)]
        self.json_records = [self._json_record(rng) for _ in range(4096)]

    # -- building blocks -------------------------------------------------

    def draw_words(self, rng: random.Random, k: int) -> list[str]:
        return rng.choices(self.words, cum_weights=self.word_cum_weights, k=k)

    def make_sentence(self, rng: random.Random, n_words: int) -> str:
        words = self.draw_words(rng, n_words)
        if n_words > 8 and rng.random() < 0.4:
            words[rng.randrange(3, n_words - 2)] += ","
        text = " ".join(words)
        end = rng.choices((".", "?", "!", ":"), (80, 10, 6, 4))[0]
        return text[0].upper() + text[1:] + end

    def _sentence(self, rng: random.Random) -> str:
        return self.make_sentence(rng, int(rng.triangular(4, 26, 11)))

    def _ident(self, rng: random.Random) -> str:
        parts = rng.choice((1, 1, 2, 2, 3))
        return "_".join(rng.choice(self.identifiers) for _ in range(parts))

    def _path(self, rng: random.Random) -> str:
        depth = rng.choice((1, 2, 2, 3, 3, 4))
        dirs = "/".join(rng.choice(self.identifiers) for _ in range(depth))
        ext = rng.choice((".py", ".py", ".md", ".json", ".txt", ".log", ".toml", ".js", ".sh"))
        return f"{dirs}/{rng.choice(self.identifiers)}{ext}"

    def _code_snippet(self, rng: random.Random) -> tuple[str, str]:
        f, a, b, v, k, x = (self._ident(rng) for _ in range(6))
        n = rng.randrange(1, 500)
        kind = rng.randrange(4)
        if kind == 0:
            doc = rng.choice(self.sentences) if self.sentences else "Helper."
            return "python", (
                f"def {f}({a}, {b}=None):\n"
                f'    """{doc}"""\n'
                f'    {v} = {a}.get("{k}", {n})\n'
                f"    if {v} is None:\n"
                f'        raise ValueError("missing {k}")\n'
                f"    return [{x} for {x} in ({b} or []) if {x} != {v}]\n"
            )
        if kind == 1:
            return "bash", (
                f'$ grep -rn "{k}" {self._path(rng).rsplit("/", 1)[0]}/ | head -{n}\n'
                f"$ python -m {f} --{a.replace('_', '-')} {n} > /tmp/{v}.out\n"
            )
        if kind == 2:
            return "sql", (
                f"SELECT {a}, count(*) AS {v}\n  FROM {f}\n WHERE {b} > ?\n"
                f" GROUP BY {a}\n ORDER BY {v} DESC\n LIMIT {n};\n"
            )
        return "javascript", (
            f"async function {f.replace('_', '')}({a}) {{\n"
            f"  const {v} = await fetch(`/api/{k}/${{{a}}}`);\n"
            f"  if (!{v}.ok) throw new Error('{x} failed: ' + {v}.status);\n"
            f"  return (await {v}.json()).{b} ?? {n};\n}}\n"
        )

    def _timestamp_text(self, rng: random.Random) -> str:
        return (
            f"2025-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}T"
            f"{rng.randrange(24):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}."
            f"{rng.randrange(1000):03d}Z"
        )

    def _log_line(self, rng: random.Random) -> str:
        level = rng.choices(("DEBUG", "INFO", "WARN", "ERROR"), (30, 55, 10, 5))[0]
        module = ".".join(rng.choice(self.identifiers) for _ in range(rng.choice((1, 2, 3))))
        return (
            f"{self._timestamp_text(rng)} {level:<5} [{module}] "
            f"{self.make_sentence(rng, rng.randrange(3, 14))}"
        )

    def _listing_line(self, rng: random.Random) -> str:
        perm = rng.choice(("-rw-r--r--", "-rw-------", "-rwxr-xr-x", "drwxr-xr-x"))
        size = int(10 ** rng.uniform(1, 7))
        month = rng.choice(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep"))
        return (
            f"{perm} 1 agent agent {size:>9} {month} {rng.randrange(1, 29):>2} "
            f"{rng.randrange(24):02d}:{rng.randrange(60):02d} {rng.choice(self.paths)}"
        )

    def _json_record(self, rng: random.Random) -> str:
        record = {
            "id": rng.randrange(1, 1_000_000),
            "name": self._ident(rng),
            "status": rng.choice(("ok", "pending", "failed", "skipped")),
            "path": rng.choice(self.paths),
            "size_bytes": rng.randrange(0, 10_000_000),
            "tags": self.draw_words(rng, rng.randrange(0, 4)),
            "note": self.make_sentence(rng, rng.randrange(3, 12)),
            "updated_at": self._timestamp_text(rng),
        }
        return json.dumps(record, separators=(", ", ": "))


@lru_cache(maxsize=None)
def _pools() -> _Pools:
    """The pools, built once per machine: building them takes most of a second, which every worker
    process would pay at its start; they are kept in the cache folder, keyed by this file's content and
    the Python version (the same code builds the same pools)."""
    path = _pools_cache_path()
    if path is not None:
        try:
            with open(path, "rb") as handle:
                pools = pickle.load(handle)
            if isinstance(pools, _Pools):
                return pools
        except Exception:   # missing, or a file that is not what this code wrote: build anew
            pass
    pools = _Pools()
    if path is not None:
        _save(pools, path)
    return pools


def _save(pools: _Pools, path: Path) -> None:
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temporary, "wb") as handle:
            pickle.dump(pools, handle, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(temporary, path)
        for stale in path.parent.glob("corpus-pools-*.pickle"):   # what older code or Pythons left
            if stale != path:
                stale.unlink(missing_ok=True)
    except OSError:
        temporary.unlink(missing_ok=True)


def prepare() -> None:
    """Build (or load) the pools now, so that the worker processes started next find them cached."""
    _pools()


def _pools_cache_path() -> Path | None:
    try:
        digest = hashlib.blake2b(Path(__file__).read_bytes() + sys.version.encode(), digest_size=8).hexdigest()
        return default_cache_dir() / f"corpus-pools-{digest}.pickle"
    except OSError:
        return None


class Corpus:
    """Seeded generator of sessions, messages and search terms."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        # Search terms come from their own stream so that asking for them
        # does not change the messages a seed produces.
        self._terms_rng = random.Random(f"walstress-terms-{seed}")
        self._pools = _pools()
        self._clock = _EPOCH
        self._users = [f"user-{random.Random(f'user-{seed}-{i}').getrandbits(40):010x}"
                       for i in range(12)]  # fmt: skip
        # session_id -> [(tool_call_id, tool_name), ...] still to be answered
        self._pending_tool_calls: dict[str, list[tuple[str, str]]] = {}

    # -- sessions ---------------------------------------------------------

    def session(self, started_at: float | None = None) -> dict:
        """A new session row: id, source, user_id, model, parent_session_id
        (always None; a caller that knows the existing sessions may set it),
        started_at and title. Without ``started_at`` the corpus clock is used
        and advanced."""
        rng = self.rng
        session_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        if started_at is None:
            self._clock += rng.expovariate(1 / 1800.0)
            started_at = round(self._clock, 3)
        title_words = self._pools.draw_words(rng, rng.randrange(2, 7))
        return {
            "id": session_id,
            "source": rng.choices(SOURCES, _SOURCE_WEIGHTS)[0],
            "user_id": rng.choice(self._users),
            "model": rng.choices(MODELS, _MODEL_WEIGHTS)[0],
            "parent_session_id": None,
            "started_at": started_at,
            "title": " ".join(title_words).capitalize(),
        }

    # -- messages ---------------------------------------------------------

    def message(self, session_id: str, timestamp: float) -> dict:
        """The next message of ``session_id``.

        Keys: session_id, role, content, tool_call_id, tool_calls, tool_name,
        timestamp, token_count, finish_reason. After an assistant message
        with ``tool_calls`` the following messages of the same session answer
        those calls (role ``tool``)."""
        rng = self.rng
        pending = self._pending_tool_calls.get(session_id)
        tool_call_id = tool_calls = tool_name = finish_reason = None
        content: str | None
        if pending:
            role = "tool"
            tool_call_id, tool_name = pending.pop(0)
            if not pending:
                del self._pending_tool_calls[session_id]
            content = self._tool_output(tool_name)
        else:
            role = rng.choices(("user", "assistant", "system"), (38, 57, 5))[0]
            if role == "user":
                content = self._user_text()
            elif role == "system":
                content = self._system_text()
            elif rng.random() < 0.55:
                calls = self._tool_calls(session_id)
                tool_calls = json.dumps(calls)
                finish_reason = "tool_calls"
                content = None if rng.random() < 0.3 else self._short_text()
            else:
                finish_reason = "stop"
                content = self._assistant_text()
        token_count = (len(content) // 4 if content else 0) + (
            len(tool_calls) // 4 if tool_calls else 0
        )
        return {
            "session_id": session_id,
            "role": role,
            "content": content,
            "tool_call_id": tool_call_id,
            "tool_calls": tool_calls,
            "tool_name": tool_name,
            "timestamp": timestamp,
            "token_count": token_count,
            "finish_reason": finish_reason,
        }

    def has_pending_tool_calls(self, session_id: str) -> bool:
        """True while tool calls of ``session_id`` still wait for their result."""
        return session_id in self._pending_tool_calls

    def end_session(self, session_id: str) -> None:
        """Forget the unanswered tool calls of ``session_id``."""
        self._pending_tool_calls.pop(session_id, None)

    def _tool_calls(self, session_id: str) -> list[dict]:
        rng, pools = self.rng, self._pools
        calls: list[dict[str, Any]] = []
        for _ in range(rng.choices((1, 2, 3), (75, 18, 7))[0]):
            call_id = f"call_{rng.getrandbits(96):024x}"
            name = rng.choice(TOOL_NAMES)
            if name in ("terminal", "execute_code"):
                arguments = {"command": rng.choice(pools.code_snippets)[1].split("\n", 1)[0]}
            elif name in ("web_search", "search_files", "memory"):
                arguments = {"query": " ".join(pools.draw_words(rng, rng.randrange(2, 6)))}
            else:
                arguments = {"path": rng.choice(pools.paths)}
            calls.append(
                {"id": call_id, "type": "function",
                 "function": {"name": name, "arguments": json.dumps(arguments)}}
            )  # fmt: skip
        pending = self._pending_tool_calls
        if len(pending) >= 4096:  # sessions abandoned mid-call: forget the oldest
            del pending[next(iter(pending))]
        pending.setdefault(session_id, []).extend(
            (c["id"], c["function"]["name"]) for c in calls
        )
        return calls

    def _user_text(self) -> str:
        rng, pools = self.rng, self._pools
        # fresh sentences, not from the pool: user text is the most varied
        return " ".join(
            pools.make_sentence(rng, int(rng.triangular(3, 20, 8)))
            for _ in range(rng.choices((1, 2, 3, 4), (40, 30, 20, 10))[0])
        )

    def _system_text(self) -> str:
        rng, pools = self.rng, self._pools
        return "You are a helpful agent. " + " ".join(
            rng.choices(pools.sentences, k=rng.randrange(2, 8))
        )

    def _short_text(self) -> str:
        return " ".join(self.rng.choices(self._pools.sentences, k=self.rng.randrange(1, 3)))

    def _assistant_text(self) -> str:
        rng, pools = self.rng, self._pools
        parts = []
        for _ in range(rng.choices((1, 2, 3, 4, 5, 6, 7), (5, 10, 20, 25, 20, 12, 8))[0]):
            parts.append(" ".join(rng.choices(pools.sentences, k=rng.randrange(2, 9))))
            if rng.random() < 0.12:
                language, code = rng.choice(pools.code_snippets)
                parts.append(f"```{language}\n{code}```")
        return "\n\n".join(parts)

    def _tool_output(self, tool_name: str | None) -> str:
        rng, pools = self.rng, self._pools
        size = int(1024 * 16 ** rng.random())  # 1-16 KiB, log-uniform
        kind = {
            "list_directory": "listing",
            "read_file": "file",
            "web_search": "json",
            "web_extract": "text",
            "terminal": "log",
            "execute_code": "log",
        }.get(tool_name or "", "") or rng.choice(("listing", "json", "log", "file", "text"))
        if kind == "listing":
            header = f"total {rng.randrange(8, 99999)}\n"
            return header + "\n".join(self._pieces(size, pools.listing_lines, 79))
        if kind == "json":
            return '{"results": [\n  ' + ",\n  ".join(
                self._pieces(size, pools.json_records, 245)
            ) + "\n]}"
        if kind == "log":
            return "\n".join(self._pieces(size, pools.log_lines, 97))
        if kind == "file":
            return "\n".join(self._pieces(size, pools.code_snippets_text, 241))
        paragraphs: list[str] = []
        total = 0
        while total < size:
            paragraphs.append(" ".join(rng.choices(pools.sentences, k=rng.randrange(3, 9))))
            total += len(paragraphs[-1]) + 2
        return "\n\n".join(paragraphs)

    def _pieces(self, size: int, pool: list[str], mean_chars: int) -> list[str]:
        """Items drawn from ``pool`` until they add up to ``size`` characters
        (counting one separator each)."""
        rng = self.rng
        pieces = rng.choices(pool, k=max(1, size // mean_chars - 2))
        total = sum(map(len, pieces)) + len(pieces)
        while total < size:
            more = rng.choices(pool, k=max(1, (size - total) // mean_chars))
            pieces.extend(more)
            total += sum(map(len, more)) + len(more)
        return pieces

    # -- search terms -----------------------------------------------------

    def search_terms(self, k: int) -> list[str]:
        """``k`` words (lowercase ASCII letters only) that occur in the corpus,
        favouring mid-frequency words, for FTS5 ``MATCH`` queries."""
        pools = self._pools
        candidates = pools.words[20:2000]
        return self._terms_rng.choices(candidates, k=k)

    def trigram_terms(self, k: int) -> list[str]:
        """``k`` substrings (at least 3 lowercase ASCII letters) of corpus words,
        for queries on a trigram FTS5 table."""
        rng = self._terms_rng
        words = [w for w in self._pools.words[:2000] if len(w) >= 4]
        terms = []
        for word in rng.choices(words, k=k):
            length = rng.randrange(3, len(word) + 1)
            start = rng.randrange(0, len(word) - length + 1)
            terms.append(word[start : start + length])
        return terms
