"""The compiled modules: everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "rawexport.export._csvline",
            sources=[
                "src/rawexport/export/_csvline.c",
                "src/rawexport/export/_csvline_build.c",
                "src/rawexport/export/_csvline_gather.c",
                "src/rawexport/export/_csvline_sort.c",
            ],
            depends=["src/rawexport/export/_csvline.h"],
            extra_compile_args=["-O3"],
        ),
        Extension(
            "rawexport.ingest._lzstring",
            sources=["src/rawexport/ingest/_lzstring.c"],
            extra_compile_args=["-O3"],
        ),
        Extension(
            "rawexport.ingest._prescan",
            sources=["src/rawexport/ingest/_prescan.c"],
            extra_compile_args=["-O3"],
        ),
        Extension(
            "rawexport.ingest._trackerpb",
            sources=["src/rawexport/ingest/_trackerpb.c"],
            extra_compile_args=["-O3"],
        ),
    ]
)
