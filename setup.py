"""Build step for the optional C kernels (native/ -> imgopt._native).

Everything else about the package is in pyproject.toml. The extension is optional: without a
working C compiler (or Python headers) the install still succeeds, and imgopt/native.py falls
back to the pure-Python twins in imgopt/pykernels.py with a warning.
"""

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """build_ext that turns any failure into a warning (Extension(optional=True) misses some)."""

    def build_extensions(self) -> None:
        if self.compiler.compiler_type == "unix":
            for ext in self.extensions:
                # No FMA contraction: the C kernels must round exactly like their Python twins.
                ext.extra_compile_args = ["-O2", "-ffp-contract=off"]
        super().build_extensions()

    def run(self) -> None:
        try:
            super().run()
        except Exception as e:  # noqa: BLE001 - any failure means "no native kernels"
            self.warn(f"imgopt: the C kernels were not built ({e}); the pure-Python twins will be used")

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as e:  # noqa: BLE001
            self.warn(f"imgopt: building {ext.name} failed ({e}); the pure-Python twins will be used")


setup(
    ext_modules=[
        Extension(
            "imgopt._native",
            sources=["native/module.c", "native/ssim.c", "native/thumbhash.c"],
            depends=["native/kernels.h"],
            include_dirs=["native"],
            optional=True,
        )
    ],
    cmdclass={"build_ext": OptionalBuildExt},
)
