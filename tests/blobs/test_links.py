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
    assert not links.verify(SECRET, KEY, str(exp), sig[:-1] + "0", 0)
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
