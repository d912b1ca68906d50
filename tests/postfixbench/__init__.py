"""A real, isolated Postfix (with policyd-spf, opendkim, opendmarc, procmail, dnsmasq, rsyslog)
for tests and for regenerating samples/. See bench.py for the life cycle, replay.py for the
replay client."""

from postfixbench.bench import Bench, BenchError, BenchSMTP, missing_requirements
from postfixbench.spec import BenchSpec, default_spec

__all__ = ["Bench", "BenchError", "BenchSMTP", "BenchSpec", "default_spec",
           "missing_requirements"]
