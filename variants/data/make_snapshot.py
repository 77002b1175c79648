"""Regenerates the WordNet noun snapshot (``wordnet_nouns.jsonl.gz``) from Debian's ``wordnet-base``,
and the verb-gloss snapshot (``wordnet_verb_glosses.jsonl.gz``): text of another distribution, the
shifted traffic that the cascade's escalation-rate rule is tested and benchmarked with.

Owns the parsing of WordNet 3.0 ``data.noun`` and ``data.verb`` lines, the gloss cleaning
(definition kept, quoted usage examples dropped) and the deterministic gzip JSON-lines writer.

Usage: ``python -m variants.data.make_snapshot [--wordnet-dir /usr/share/wordnet] [--out PATH]
[--verbs-out PATH]``
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypedDict

DEFAULT_WORDNET_DIR = Path("/usr/share/wordnet")
DEFAULT_OUT = Path(__file__).resolve().parent / "wordnet_nouns.jsonl.gz"
DEFAULT_VERBS_OUT = Path(__file__).resolve().parent / "wordnet_verb_glosses.jsonl.gz"

# WordNet 3.0 lexicographer files for nouns (lexnames(5WN)); numbers outside 03..28 are
# adjective, adverb or verb files and must never occur in data.noun.
NOUN_LEXNAMES: dict[int, str] = {
    3: "noun.Tops",
    4: "noun.act",
    5: "noun.animal",
    6: "noun.artifact",
    7: "noun.attribute",
    8: "noun.body",
    9: "noun.cognition",
    10: "noun.communication",
    11: "noun.event",
    12: "noun.feeling",
    13: "noun.food",
    14: "noun.group",
    15: "noun.location",
    16: "noun.motive",
    17: "noun.object",
    18: "noun.person",
    19: "noun.phenomenon",
    20: "noun.plant",
    21: "noun.possession",
    22: "noun.process",
    23: "noun.quantity",
    24: "noun.relation",
    25: "noun.shape",
    26: "noun.state",
    27: "noun.substance",
    28: "noun.time",
}

# Syntactic markers only occur in data.adj, but stripping them here keeps the parser
# usable on any data.* file without leaking "(p)" into lemmas.
_MARKER = re.compile(r"\((?:a|p|ip)\)$")
# Outside parentheses a quote opens a usage example unless the definition introduces it as a
# mentioned expression ('especially in the phrase "the call of duty"'), so the lead-ins are
# listed rather than the separators: some examples follow a bare word or a comma.
_MENTION_LEAD_IN = re.compile(r"(?:\b(?:phrase|expression|term|word|as in)|\be\.g\.|\bi\.e\.),?\s*$", re.I)


class SnapshotRecord(TypedDict):
    offset: str
    label: str
    words: list[str]
    text: str


def clean_gloss(gloss: str) -> str:
    """Return the definition part of a WordNet gloss, without its quoted usage examples.

    Everything from the first top-level example quote on is dropped: examples may contain
    ``;``, unbalanced quotes or attributions (``"..."- Shakespeare``), so splitting on
    separators is not reliable, while no definition text follows an example in WordNet 3.0.
    """
    depth = 0
    in_quote = False
    cut = len(gloss)
    for i, ch in enumerate(gloss):
        if ch == '"':
            if in_quote:
                in_quote = False
                continue
            if depth == 0 and not _MENTION_LEAD_IN.search(gloss[:i]):
                cut = i
                break
            in_quote = True
        elif not in_quote and ch == "(":
            depth += 1
        elif not in_quote and ch == ")":
            depth = max(0, depth - 1)
    text = gloss[:cut]
    if text.count('"') % 2:
        # A stray unmatched quote (e.g. 'services are available"') is a typo in the source.
        head, _, tail = text.rpartition('"')
        text = head + tail
    text = " ".join(text.split())
    return text.rstrip(" ;:,").strip()


def clean_word(word: str) -> str:
    """Turn a WordNet lemma into display form: underscores to spaces, syntactic marker removed."""
    return _MARKER.sub("", word).replace("_", " ")


def parse_line(line: str) -> SnapshotRecord | None:
    """Parse one ``data.noun`` synset line; ``None`` for license header lines and blank lines.

    Raises ``ValueError`` on a malformed line or a lexicographer file that is not a noun file,
    so a changed source format fails loudly instead of producing a skewed snapshot.
    """
    if not line.strip() or line.startswith("  "):
        return None
    head, sep, gloss = line.partition("|")
    if not sep:
        raise ValueError(f"synset line has no gloss separator '|': {line[:80]!r}")
    fields = head.split()
    try:
        offset, lex_filenum, ss_type = fields[0], int(fields[1], 10), fields[2]
        w_cnt = int(fields[3], 16)
        words = [clean_word(w) for w in fields[4 : 4 + 2 * w_cnt : 2]]
        p_cnt = int(fields[4 + 2 * w_cnt], 10)
    except (IndexError, ValueError) as exc:
        raise ValueError(f"malformed synset line: {line[:80]!r}") from exc
    if len(offset) != 8 or not offset.isdigit():
        raise ValueError(f"bad synset offset {offset!r}")
    if ss_type != "n":
        raise ValueError(f"synset {offset} has ss_type {ss_type!r}, expected 'n'")
    if len(words) != w_cnt or not all(words):
        raise ValueError(f"synset {offset} declares {w_cnt} words but has {len(words)}")
    if len(fields) < 5 + 2 * w_cnt + 4 * p_cnt:
        raise ValueError(f"synset {offset} declares {p_cnt} pointers but has fewer")
    if lex_filenum not in NOUN_LEXNAMES:
        raise ValueError(f"synset {offset} has non-noun lex_filenum {lex_filenum:02d}")
    return {
        "offset": offset,
        "label": NOUN_LEXNAMES[lex_filenum],
        "words": words,
        "text": clean_gloss(gloss.strip()),
    }


def parse_data_noun(lines: Iterable[str]) -> list[SnapshotRecord]:
    """Parse ``data.noun`` lines into records sorted by offset, dropping empty definitions."""
    records = [r for r in map(parse_line, lines) if r is not None and r["text"]]
    records.sort(key=lambda r: r["offset"])
    return records


def parse_verb_glosses(lines: Iterable[str]) -> list[dict[str, str]]:
    """``data.verb`` lines -> {offset, text} of every verb synset with a definition, by offset."""
    out = []
    for line in lines:
        if not line.strip() or line.startswith("  "):
            continue
        head, sep, gloss = line.partition("|")
        fields = head.split()
        if not sep or len(fields) < 3 or fields[2] != "v":
            raise ValueError(f"not a verb synset line: {line[:80]!r}")
        text = clean_gloss(gloss.strip())
        if text:
            out.append({"offset": fields[0], "text": text})
    out.sort(key=lambda r: r["offset"])
    return out


def iter_jsonl(records: Iterable[Any]) -> Iterator[bytes]:
    for record in records:
        yield (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def write_snapshot(records: Iterable[Any], out: Path) -> None:
    """Write gzip JSON lines with a fixed header (no name, mtime 0) so the bytes are reproducible."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with (
        out.open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as gz,
    ):
        for chunk in iter_jsonl(records):
            gz.write(chunk)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wordnet-dir", type=Path, default=DEFAULT_WORDNET_DIR)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--verbs-out", type=Path, default=DEFAULT_VERBS_OUT)
    args = parser.parse_args(argv)
    source = args.wordnet_dir / "data.noun"
    # latin-1 never fails to decode; WordNet 3.0 data.noun is pure ASCII anyway.
    with source.open(encoding="latin-1") as fh:
        records = parse_data_noun(fh)
    labels = {r["label"] for r in records}
    if labels != set(NOUN_LEXNAMES.values()):
        missing = sorted(set(NOUN_LEXNAMES.values()) - labels)
        raise SystemExit(f"{source}: labels missing from the data: {missing}")
    write_snapshot(records, args.out)
    print(f"wrote {len(records)} synsets ({len(labels)} labels) to {args.out}")
    with (args.wordnet_dir / "data.verb").open(encoding="latin-1") as fh:
        verbs = parse_verb_glosses(fh)
    write_snapshot(verbs, args.verbs_out)
    print(f"wrote {len(verbs)} verb glosses to {args.verbs_out}")


if __name__ == "__main__":
    main()
