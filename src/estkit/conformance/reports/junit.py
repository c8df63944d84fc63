"""JUnit XML report, the format CI systems (GitLab, Jenkins, GitHub actions) display.

One ``testcase`` per result: fail → ``failure``, skip and n/a → ``skipped``, warn → passed with
the warning in ``system-out``, so a CI job goes red exactly when the suite's exit status does.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from estkit.conformance.model import Status, SuiteReport

SUITE_NAME = "estkit test-server"


def report_to_junit(report: SuiteReport) -> bytes:
    """The report as a UTF-8 JUnit XML document."""
    # The same totals on the document root and on its one testsuite (CI tools read either).
    totals = {
        "name": SUITE_NAME,
        "tests": str(len(report.results)),
        "failures": str(report.count(Status.FAIL)),
        "errors": "0",
        "skipped": str(report.count(Status.SKIP) + report.count(Status.NA)),
        "time": f"{report.duration_ms / 1000:.3f}",
    }
    root = ET.Element("testsuites", totals)
    suite = ET.SubElement(
        root,
        "testsuite",
        totals,
        timestamp=report.started_at.isoformat(),
        hostname=str(report.server.get("url", "")),
    )
    properties = ET.SubElement(suite, "properties")
    for key, value in report.server.items():
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        ET.SubElement(properties, "property", name=str(key), value=text)
    for result in report.results:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"estkit.conformance.{result.id}",
            name=f"{result.id}: {result.name} [{result.requirement}]",
            time=f"{result.duration_ms / 1000:.3f}",
        )
        evidence = json.dumps(result.evidence, indent=2, default=str)
        if result.status is Status.FAIL:
            failure = ET.SubElement(case, "failure", message=result.message, type="fail")
            failure.text = evidence
        elif result.status in (Status.SKIP, Status.NA):
            ET.SubElement(case, "skipped", message=f"{result.status}: {result.message}")
        elif result.status is Status.WARN:
            out = ET.SubElement(case, "system-out")
            out.text = f"warn: {result.message}\n{evidence}"
    ET.indent(root)
    document: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return document
