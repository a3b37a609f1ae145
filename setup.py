from setuptools import setup

setup(
    name="stationd",
    version="0.1.0",
    description="The data node of a network of scientific field stations (a twistd daemon).",
    long_description=open("README.rst", encoding="utf-8").read(),
    long_description_content_type="text/x-rst",
    license="MIT",
    python_requires=">=3.11",
    # The dropin folder twisted/plugins has no __init__.py on purpose: one
    # there would shadow Twisted's own twisted.plugins package.
    packages=["stationd", "stationd.store", "stationd.web", "stationd.sensors", "twisted.plugins"],
    package_dir={"": "src", "twisted.plugins": "twisted/plugins"},
    package_data={"stationd": ["default.ini"]},
    install_requires=[
        "twisted[tls]==26.10.0",
        "klein==24.8.0",
        "treq==26.7.0",
        "SQLAlchemy==2.1.9",
        "psycopg[binary]==3.3.9",
        "cryptography>=44",
        "pyOpenSSL==26.4.0",
        "service-identity==26.1.0",
        "zope.interface>=6",
        "prometheus-client==0.26.0",
        "orjson==3.13.0",
        "txdbus==1.1.2",
    ],
    extras_require={
        # numpy only to build the pickles real stations send; stationd never imports it.
        "test": ["pytest>=8", "pytest-twisted==1.14.3", "numpy"],
    },
    entry_points={
        "console_scripts": [
            "stationd-admin = stationd.admin:main",
            "stationd-client = stationd.cli:main",
        ],
    },
)
