"""The one compiled module: everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "rawexport.export._csvline",
            sources=["src/rawexport/export/_csvline.c"],
            extra_compile_args=["-O3"],
        )
    ]
)
