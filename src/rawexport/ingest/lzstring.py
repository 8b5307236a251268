"""lz-string decompression, exactly as npm lz-string 1.5.0, bounded (C: _lzstring.c).

GrowingIO's web SDK compresses its JSON bodies with the JavaScript library lz-string
(pieroxy). Three of its wire forms are decoded here, each like its JS counterpart:

| function | wire form | JS |
|---|---|---|
| `decompress_uint8` | bytes, each 16-bit unit as 2 bytes big-endian | `decompressFromUint8Array` |
| `decompress_uri` | `A-Za-z0-9+-$` (bytes or str); a space reads as `+` | `decompressFromEncodedURIComponent` |
| `decompress_utf16` | str of code value + 32 (U+0020..U+801F), or its UTF-8 bytes | `decompressFromUTF16` |

Each returns the decompressed text as UTF-8 bytes: the JS result is a string of UTF-16 code
units; a surrogate pair becomes one 4-byte sequence, a lone surrogate its 3-byte form (as
Python's 'surrogatepass' writes it), so `json.loads` or `.decode("utf-8")` follows.

Bounds. `limit` caps the output in UTF-8 bytes: as soon as the output would pass it, the
decoder stops with `OverflowError` (distinct from ValueError, so a caller answers 413). A
limit above 2**31 - 1 acts as 2**31 - 1; a negative one is a ValueError. Dictionary entries
are substrings of the output, so they are kept as (offset, length) into it, never copied:
memory is the output (at most 2 bytes a unit, at most `limit` units) plus 12 bytes per
entry (at most two per token of >= 3 input bits), and time is linear in input plus output.
A 5 KB body that expands to 5 MB of text stops at a 1 MiB limit in about a millisecond.
The GIL is released while decoding.

Errors: ValueError for anything the JS would not decode to a complete string. Where the JS
differs from a plain "it decoded":

| input | npm lz-string 1.5.0 | here |
|---|---|---|
| empty | `null` | ValueError |
| Uint8Array of odd length | throws RangeError | ValueError |
| stream ends before its end marker (truncated) | `""` | ValueError |
| token naming an entry not yet defined | `null` | ValueError |
| first token 3 (no compressor writes it) | goes on with `undefined` as its first entry: a null, or text containing "undefined" | ValueError |
| a character outside the form's alphabet (URI), or outside U+0020..U+801F (UTF16; bad UTF-8 too) | read as zero bits, or as the bits of a negative number, silently | ValueError, anywhere in the input |
| the end marker's bits run past the end of the input | read as zeros: decodes | decodes, the same |
| data after the end marker | ignored | ignored (but its characters must be valid) |

So an empty string compresses to a real stream and decompresses to b"" here too.

Choosing this over a PyPI port (measured 2026-12 with the table's versions against npm
lz-string 1.5.0: 68 random texts, ASCII, CJK, non-BMP, the empty string, 'ab' * 5000,
'a' * 100000, all three forms; speed decoding a 34 KB JSON array of 50 web events from
compressToUint8Array, one core):

| package | exact? | decode speed | notes |
|---|---|---|---|
| lzstring 1.0.4 | Uint8Array (via `decompress` of the units) and URI 68/68; UTF16 raises TypeError on every input | 1.9 MB/s (2,800 events/s) | pure Python, 2018, needs `future` |
| py-lzstring 0.1.1 | 68/68 in all three forms | 2.5 MB/s (3,600 events/s) | pure Python, 2026; its wheel also installs a top-level `tests` package |
| lzstring-optimized 0.8.0 | base64 form only (Uint8Array and URI fed through it): 7/68; longer inputs raise "decompression failed" or come back cut short | n/a (fails on the payload; 2.5-10 MB/s on the few tiny inputs it got right) | Rust wheel; 0.9.1 is listed but not served |
| lzstring-codec 0.1.0 | not installable here: an sdist for Python >= 3.12 whose Rust build fetches crates | n/a | |
| this module | all forms, and equal to the JS on random garbage too (tests/ingest/test_lzstring.py) | about 250 MB/s (about 370,000 events/s) | |

We need more than 50 MB/s of output, so none of them.
"""

from __future__ import annotations

from rawexport.ingest._lzstring import decompress_uint8, decompress_uri, decompress_utf16

__all__ = ["decompress_uint8", "decompress_uri", "decompress_utf16"]
