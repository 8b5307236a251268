import hashlib
import hmac

from rawexport.blobs import links
from rawexport.timeutil import DAY_MS, HOUR_MS

SECRET = "s" * 64
KEY = "ab12_0123456789abcdef_page_v2_202501100000/part-00000-" + "0" * 8 + "-c000.csv.gz"


def test_sign_is_hmac_of_key_and_expiry() -> None:
    expected = hmac.new(SECRET.encode(), f"{KEY}\n123".encode(), hashlib.sha256).hexdigest()
    assert links.sign(SECRET, KEY, 123) == expected


def test_make_link_keeps_the_key_as_the_first_segments() -> None:
    link = links.make_link("https://files.example", SECRET, KEY, 1700000000000)
    assert link == (
        f"https://files.example/{KEY}?expires=1700000000000"
        f"&sign={links.sign(SECRET, KEY, 1700000000000)}"
    )
    odd = links.make_link("http://h", SECRET, "a b/c?d", 5)
    assert odd.startswith("http://h/a%20b/c%3Fd?expires=5&sign=")


def test_verify_accepts_only_our_unexpired_signatures() -> None:
    exp = 10_000
    sig = links.sign(SECRET, KEY, exp)
    assert links.verify(SECRET, KEY, str(exp), sig, exp - 1)
    assert not links.verify(SECRET, KEY, str(exp), sig, exp)  # expired
    assert not links.verify(SECRET, KEY, str(exp + 1), sig, 0)  # tampered expiry
    assert not links.verify(SECRET, KEY + "x", str(exp), sig, 0)  # another key
    assert not links.verify("t" * 64, KEY, str(exp), sig, 0)  # another secret
    assert not links.verify(
        SECRET, KEY, str(exp), sig[:-1] + ("1" if sig.endswith("0") else "0"), 0
    )
    assert not links.verify(SECRET, KEY, str(exp), sig.upper(), 0)
    for expires, signature in [(None, sig), (str(exp), None), ("", sig), ("-1", sig)]:
        assert not links.verify(SECRET, KEY, expires, signature, 0)
    assert not links.verify(SECRET, KEY, "9" * 40, sig, 0)
    assert not links.verify(SECRET, KEY, str(exp), "é" * 64, 0)


def test_expiry_is_capped_by_the_files_retention() -> None:
    hour = 100 * DAY_MS
    now = hour + HOUR_MS
    assert links.expiry(now, 5, hour, 15) == now + 5 * 60_000
    assert links.expiry(now, 10080, hour, 15) == now + 10080 * 60_000
    late = hour + 15 * DAY_MS - 60_000  # one minute of retention left
    assert links.expiry(late, 10080, hour, 15) == hour + 15 * DAY_MS
    assert links.retained_until(hour, 2) == hour + 2 * DAY_MS


def java_split_link(link: str, start: int) -> tuple[str, str]:
    """GrowingIO's Java SDK `splitLink`, with Java's String semantics (indexOf -1, substring
    throwing on bad bounds): `{data_type}` and `{date}` from `link.indexOf('_', start)`."""
    i = link.find("_", start)
    j = link.find("/", i) if i >= 0 else link.find("/")
    begin, end = i + 1, j
    if begin < 0 or end < 0 or begin > end or end > len(link):
        raise IndexError(f"StringIndexOutOfBoundsException: begin {begin}, end {end}")
    part = link[begin:end]
    data_type, _, date = part.rpartition("_")
    return data_type, date


AI = "0123456789abcdef"
UUID = "3bac0bfb-9594-591e-8f0b-d7040bae0adc"


def origin_of(length: int) -> str:
    """A base URL that is `length` characters long with its slash (like the issue counts)."""
    return "http://" + "h" * (length - len("http://") - len(":8080/")) + ":8080"


def test_link_paths_parse_with_both_java_variants_for_origins_of_16_to_61() -> None:
    for length in range(16, 62):
        base = origin_of(length)
        assert len(base) + 1 == length
        for version, key in (
            ("v2", f"ab12_{AI}_custom_event_v2_202501100000/part-00003-{UUID}-c000.csv.gz"),
            ("v1", f"ab12_{AI}_action_tag_202501100000/part-00000-{UUID}.csv.gz"),
        ):
            path = links.link_path(key, base)
            link = links.make_link(base, SECRET, path, 1)
            want = "custom_event_v2" if version == "v2" else "action_tag"
            for start in (63, 64):
                assert java_split_link(link, start) == (want, "202501100000"), (length, start)
            # The rest of the key is unchanged: the first segment, the date, the file name.
            assert link.split("/")[3].split("_", 1)[1] == key.split("/")[0].split("_", 1)[1]
            assert link.split("/")[3].split("_")[-1] == "202501100000"
            assert link.split("?")[0].rsplit("/", 1)[1] == key.rsplit("/", 1)[1]
            assert links.parse_first_segment(path) is not None


def test_growingio_origin_keeps_the_key_and_short_origins_fail_without_shaping() -> None:
    key = f"ab12_{AI}_page_v2_202501100000/part-00000-{UUID}-c000.csv.gz"
    s3 = "https://growing-insights.s3.cn-north-1.amazonaws.com.cn"  # 56 with the slash
    assert links.link_path(key, s3) == key
    # What rawexport did before: the key itself on a 22-character origin breaks the Java
    # arithmetic (so the test above would catch an unshaped link).
    naive = links.make_link("http://127.0.0.1:8080", SECRET, key, 1)
    for start in (63, 64):
        try:
            got = java_split_link(naive, start)
        except IndexError:
            continue
        assert got != ("page_v2", "202501100000")
    # Past 61 characters no prefix can work: the stored 4 hex are kept.
    long_base = origin_of(70)
    assert links.link_path(key, long_base) == key


def test_day_alias_renumbers_parts_and_keeps_the_uuid() -> None:
    key = f"ab12_{AI}_page_202501100300/part-00000-{UUID}.csv.gz"
    alias = links.day_alias(key, AI, "page", "20250110", 7)
    assert alias.endswith(f"_{AI}_page_20250110/part-00007-{UUID}.csv.gz")
    assert links.part_uuid(alias) == links.part_uuid(key) == UUID
    prefix, ai, middle, stamp = links.parse_first_segment(alias) or ("", "", "", "")
    assert (len(prefix), ai, middle, stamp) == (4, AI, "page", "20250110")
    # the same prefix for every part of the type's day
    other = f"cd34_{AI}_page_202501100400/part-00001-{UUID[:-1]}1.csv.gz"
    assert links.day_alias(other, AI, "page", "20250110", 8).split("/")[0] == alias.split("/")[0]
