"""Packages: hsfm_jax, with the command-line programs' packages (experiments, feature_export)
inside it under hsfm_jax/_apps (`hsfm_jax.apps`), so that no generic top-level package is
installed. benchmarks/ and tests/ run from a checkout only. Metadata: setup.cfg."""

from setuptools import find_packages, setup

APPS = ("experiments", "feature_export")

packages = find_packages(include=["hsfm_jax", "hsfm_jax.*"])
package_dir = {}
for app in APPS:
    packages += [f"hsfm_jax._apps.{name}" for name in find_packages(include=[app, f"{app}.*"])]
    package_dir[f"hsfm_jax._apps.{app}"] = app

setup(packages=packages, package_dir=package_dir)
