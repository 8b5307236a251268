"""The one compiled module: everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "rawexport._csvline",
            sources=["src/rawexport/_csvline.c"],
            extra_compile_args=["-O3"],
        )
    ]
)
