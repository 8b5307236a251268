"""Sample values of the synthetic events: pools per field, some per platform.

Many values carry the characters the CSV dialect must quote or escape (`,` `"` `\\`, line
breaks) and non-ASCII text, so every export exercises them.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from rawexport.store.events import encode_map

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]


def pool(*values: str) -> pa.Array:
    assert all(values), "no empty strings: null says 'no value'"
    return pa.array(values, pa.string())


class Grouped:
    """One pool per platform code, concatenated; index() picks inside the row's group."""

    def __init__(self, *groups: Sequence[str | None]) -> None:
        assert all(v is None or v for g in groups for v in g)
        self.values = pa.array([v for g in groups for v in g], pa.string())
        self.sizes = np.array([len(g) for g in groups], dtype=np.uint64)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)

    def index(self, group: I64, h: U64) -> I64:
        return self.offsets[group] + (h % self.sizes[group]).view(np.int64)

    def take(self, group: I64, h: U64) -> pa.Array:
        return self.values.take(pa.array(self.index(group, h)))


PLATFORMS = pool("Web", "iOS", "Android", "MinP")
PLATFORM_CUM = np.cumsum([40, 25, 28, 7]).astype(np.uint64)

WEB_PATHS = [
    "/", "/index.html", "/search", "/cart", "/checkout/pay", "/商品/详情", "/活动/双十一 🎉",
    "/help/faq,contact", '/say/"hello"', "/files\\report.pdf", "/news/2024/本地新闻",
    "/user/profile", "/💡/ideas", "/a b/c",
    *(f"/item/{n}" for n in (1, 7, 42, 305, 1024, 9001, 31337, 65536)),
    *(f"/category/{c}/list" for c in ("shoes", "手机", "home,garden", "toys")),
]  # fmt: skip
APP_PAGES = [
    "MainActivity", "ProductDetailActivity", "CartViewController", "HomeViewController",
    "订单页", "SettingsFragment", "Search, Results", 'WebView"Embedded"', "Pay\\Confirm",
    "个人中心 👤",
]  # fmt: skip
MINP_PAGES = ["pages/index/index", "pages/goods/detail", "pages/订单/list", "pages/me/me"]
PAGE_PATHS = Grouped(WEB_PATHS, APP_PAGES, APP_PAGES, MINP_PAGES)
REFERRER_PAGES = Grouped([None], APP_PAGES, APP_PAGES, MINP_PAGES)
DOMAINS = Grouped(
    ["www.example.com", "shop.example.com", "m.example.cn", "商城.example.cn", "blog.example.org"],
    ["com.example.shop", "com.example.news"],
    ["com.example.shop", "cn.example.mall"],
    ["wx1234567890abcdef"],
)
QUERIES = pool(
    "q=手机", "q=hello,world", "utm_source=wechat&utm_medium=cpc", 'ref="banner"',
    "path=C:\\temp", "note=line1\nline2", "note=line1\r\nline2", "emoji=😀🎉", "id=12345&sort=asc",
    "from=首页&tab=推荐", "a=1,b=2,c=3", "page=2", "k=v",
)  # fmt: skip
REFERRERS = pool(
    "https://www.baidu.com/s?wd=手机", "https://www.google.com/search?q=a,b",
    'https://example.com/path?x="y"', "https://weibo.com/🔥", "https://example.com/a\\b",
    "https://www.example.com/", "https://m.example.cn/item/42?from=share",
    "https://example.com/?multi=1\n2",
)  # fmt: skip
TITLES = pool(
    "首页 - 示例商城", "Sale, 50% off!", 'The "best" deals', "C:\\Users\\demo", "Multi-line\ntitle",
    "Windows\r\nline ending", "🔥 Hot deals 🔥", "商品详情 | 示例, Inc.", "Plain title", "About us",
    "Contact", 'Search results for "手机"', "Order #1024", "订单确认",
)  # fmt: skip
REQUEST_VALUES = pool(
    "确定", "Add to cart", 'Buy "now"', "a,b,c", "back\\slash", "line\nbreak", "crlf\r\nbreak",
    "立即购买 🛒", "Submit", "Next →", "Login", "1",
)  # fmt: skip
HREFS = pool(
    "https://example.com/item/1", "/cart", "javascript:void(0)", "https://example.com/s?q=a,b",
    "https://例子.cn/页面", '/go?to="x"', "#top",
)  # fmt: skip
INFOS = pool("banner,top", '{"pos":"1"}', "推荐位", "a\\b", "multi\nline", "🎯 target", "slot-3")
REQUEST_TYPES = pool("clck", "clck", "clck", "chng", "sbmt")
EVENT_NAMES = pool(
    "add_to_cart", "pay_success", "支付成功", "share,wechat", "search", "video_play",
    "点击banner", "register", "level_up 🎮", 'quote"event',
)  # fmt: skip
ATTRIBUTES = pool("vip", "新客", "level,3", '"gold"', "a\\b", "x\ny", "😀", "group-A", "north")
PAGE_GROUPS = pool("home", "detail", "列表页", "check,out")
LOGIN_PREFIXES = pool("user_", "会员", "uid:", "mail,", 'q"')
ORIENTATIONS = pool("PORTRAIT", "PORTRAIT", "PORTRAIT", "LANDSCAPE")
LANGUAGES = pool("zh-CN", "zh-CN", "zh-CN", "en-US", "zh-TW", "ja-JP")
SDK_VERSIONS = Grouped(
    ["web-3.3.2", "web-3.8.1"], ["2.9.4", "3.4.1"], ["2.9.0", "3.4.1-beta"], ["mp-3.3.0"]
)
OS_NAMES = Grouped(["Windows", "macOS", "Linux", "iOS", "Android"], ["iOS"], ["Android"], ["iOS"])
OS_VERSIONS = Grouped(
    ["10", "11", "14.2", "Ubuntu 22.04"], ["16.7.2", "17.1"], ["12", "13", "14"], ["8.0.40"]
)
CLIENT_VERSIONS = Grouped([None], ["5.2.0", "5.3.1 (1024)"], ["5.2.0", "5.3.0,hotfix"], [None])
CHANNELS = Grouped([None], ["App Store"], ["华为应用市场", "Google Play", "官网, direct"], [None])
DEVICE_TYPES = Grouped([None], ["1", "0"], ["1", "1", "0"], ["1"])
BRAND_MODELS = (
    [(None, None)],
    [("Apple", "iPhone15,2"), ("Apple", "iPhone 13 Pro"), ("Apple", "iPad13,4")],
    [("Huawei", "Mate 60 Pro"), ("Xiaomi", "Redmi K70"), ("Samsung", "SM-G9910"),
     ("荣耀", "PCT-AL10")],
    [("Apple", "iPhone 14"), ("OPPO", "PDEM10")],
)  # fmt: skip
BRANDS = Grouped(*([b for b, _ in g] for g in BRAND_MODELS))
MODELS = Grouped(*([m for _, m in g] for g in BRAND_MODELS))
SCREENS = (
    [("1080", "1920"), ("900", "1440"), ("768", "1366")],
    [("2532", "1170"), ("2796", "1290")],
    [("2400", "1080"), ("3200", "1440")],
    [("844", "390")],
)
SCREEN_HEIGHTS = Grouped(*([h for h, _ in g] for g in SCREENS))
SCREEN_WIDTHS = Grouped(*([w for _, w in g] for g in SCREENS))
USER_AGENTS = Grouped(
    [
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Safari/537.36",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.1 Safari/605.1.15",
    ],
    ["ExampleShop/5.3.1 (iPhone; iOS 17.1; Scale/3.00)"],
    ["Dalvik/2.1.0 (Linux; U; Android 13; Mate 60 Pro Build/HUAWEI)"],
    ["Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) MicroMessenger/8.0.40"],
)
LINK_NAMES = pool(
    "双十一大促 🎉 首页横幅", "Spring sale, banner A", '"VIP" push', "Line\nbreak link",
    "back\\slash link", "朋友圈广告",
)  # fmt: skip
CAMPAIGN_NAMES = pool(
    "双十一", "Spring, 2024", '"Launch" week', "拉新活动 🚀", "Retarget", "Back\\to\\school"
)
CHANNEL_NAMES = pool("微信朋友圈", "Douyin, feed", "百度搜索", 'Toutiao "news"')
CLICK_URL_QUERIES = pool("?idfa=__IDFA__", "?cb=a,b", '?note="x"', "?来源=微信")


def map_pool(keys: Sequence[str], values: Sequence[str], n: int, salt: int) -> pa.Array:
    r = random.Random(salt)
    maps = []
    for _ in range(n):
        k = r.sample(list(keys), r.randint(1, min(4, len(keys))))
        maps.append(encode_map({key: r.choice(values) for key in k}))
    return pa.array(maps, pa.string())


MAP_VALUES = (
    "50.0", "101", "funnel", "北京", "a,b", "line\nbreak", "crlf\r\nvalue", '"quoted"',
    "back\\slash", "🎉", "true", "retention",
)  # fmt: skip
APP_VARIABLES = map_pool(("appChannel", "abTest", "主题", "flag,x"), MAP_VALUES, 40, 1)
EVENT_VARIABLES = map_pool(
    ("price", "item", "category", "来源", 'say "hi"', "a\\b"), MAP_VALUES, 200, 2
)
PAGE_VARIABLES = map_pool(("category", "pageType", "频道", "tag,1"), MAP_VALUES, 80, 3)
CONVERSION_VARIABLES = map_pool(("keyword", "campaign", "渠道", "emoji😀"), MAP_VALUES, 80, 4)
VISITOR_VARIABLES = map_pool(("openid", "unionid", "gender", "城市"), MAP_VALUES, 80, 5)
ADS_VARIABLES = map_pool(("ad_group", "creative", "关键词", "pos,x"), MAP_VALUES, 40, 6)


# ---- one hour's entities --------------------------------------------------------------------
