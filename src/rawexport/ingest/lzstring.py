"""lz-string decompression, exactly as npm lz-string 1.5.0, bounded (C: _lzstring.c).

GrowingIO's web SDK compresses its JSON bodies with the JavaScript library lz-string
(pieroxy). Three of its wire forms are decoded here, each like its JS counterpart:

- `decompress_uint8(data, limit)`: `LZString.decompressFromUint8Array`. Bytes (or any
  buffer), each 16-bit unit as 2 bytes big-endian; what the web SDK POSTs with compress=1.
- `decompress_uri(data, limit)`: `LZString.decompressFromEncodedURIComponent`. Characters
  of `A-Za-z0-9+-$`, as bytes or str; a space is read as `+` (form decoding makes `+` a
  space), like the JS does.
- `decompress_utf16(data, limit)`: `LZString.decompressFromUTF16`. A str of characters
  U+0020..U+801F (code value + 32, usually a trailing space), or its UTF-8 bytes as sent.

Each returns the decompressed text as UTF-8 bytes. The JS result is a string of UTF-16 code
units: a surrogate pair becomes one 4-byte sequence, a lone surrogate its 3-byte form (as
Python's 'surrogatepass' writes it), so `.decode("utf-8", "surrogatepass")` is the JS string.

Bounds. `limit` caps the output in UTF-8 bytes: as soon as the output would pass it, the
decoder stops with `OverflowError`, distinct from ValueError so that a caller answers 413.
A limit above 2**31 - 1 acts as 2**31 - 1; a negative one is a ValueError. Dictionary
entries are substrings of the output, so they are kept as (offset, length) into it, never
copied: memory is the output (2 bytes a UTF-16 unit, at most `limit` units) plus 12 bytes
per entry (at most two per token, a token being at least 3 bits of input), and time is
linear in input plus output. 14 KB of input that would expand to 40 million characters
stops at a 1 MiB limit in about 2 ms, having grown the process by about 2 MiB. The GIL is
released while decoding.

Errors. ValueError for anything the JS would not decode to a complete string. The JS:

- empty input: returns null. Here: ValueError.
- a Uint8Array of odd length: throws (an array of length n/2). Here: ValueError.
- a stream that ends before its end marker (truncated): returns "", which an empty text
  also gives. Here: ValueError; an empty text (its stream is not empty) gives b"".
- a token naming a dictionary entry not defined yet: returns null. Here: ValueError.
- a first token of 3, which no compressor writes: goes on with `undefined` as its first
  entry, answering null or text that contains "undefined". Here: ValueError.
- a character outside the form's alphabet (URI), or outside U+0020..U+801F (UTF16; or bytes
  that are not UTF-8 of one): reads it as zero bits, or as the bits of a negative number,
  and decodes on. Here: ValueError, wherever it is in the input.
- an end marker whose last bits lie past the end of the input: reads zeros there and
  decodes. Here the same.
- data after the end marker: ignored. Here too (its characters must still be valid).

Everywhere else the result equals the JS, code unit for code unit: tests/ingest/
test_lzstring.py compares them on random texts, and on random and damaged streams.

Why not a PyPI port. Measured in 2026-12 against npm lz-string 1.5.0 (68 random texts:
ASCII, CJK, non-BMP, the empty string, 'ab' * 5000, 'a' * 100000; all three forms) and on a
34 KB JSON array of 50 web events compressed with compressToUint8Array, one core:

| package            | exact                        | decoding the 34 KB array     |
|--------------------|------------------------------|------------------------------|
| lzstring 1.0.4     | Uint8Array (as `decompress`  | 1.9 MB/s (2,800 events/s)    |
| (pure Python,      | of the units) and URI 68/68; |                              |
| 2018, needs        | UTF16 raises TypeError on    |                              |
| `future`)          | every input                  |                              |
| py-lzstring 0.1.1  | 68/68 in all three forms     | 2.5 MB/s (3,600 events/s)    |
| (pure Python;      |                              |                              |
| installs a         |                              |                              |
| top-level `tests`) |                              |                              |
| lzstring-optimized | base64 form only (Uint8Array | fails ("decompression        |
| 0.8.0 (Rust; the   | and URI fed through it):     | failed"); 2.5-10 MB/s on the |
| listed 0.9.1 is    | 7/68, longer texts raise or  | few tiny texts it gets right |
| not served)        | come back cut short          |                              |
| lzstring-codec     | not installable here: sdist  | -                            |
| 0.1.0              | for Python >= 3.12 whose     |                              |
|                    | Rust build fetches crates    |                              |
| this module        | all forms, and garbage too   | about 250 MB/s (370,000      |
|                    |                              | events/s)                    |

"Exact" for the two pure-Python ports means the same UTF-16 code units: both return a
non-BMP character as two surrogate code points in a str, which `.encode("utf-8")` refuses
(it takes a 'surrogatepass' round trip through UTF-16 to fix), and neither has a limit.

We need more than 50 MB/s of decoded output; hence our own, in C.
"""

from __future__ import annotations

from rawexport.ingest._lzstring import decompress_uint8, decompress_uri, decompress_utf16

__all__ = ["decompress_uint8", "decompress_uri", "decompress_utf16"]
