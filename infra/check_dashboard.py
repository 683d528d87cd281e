#!/usr/bin/env python3
"""template.yaml's Dashboard body is infra/cloudwatch/dashboard.json, and every ${Name} in it
is a parameter or resource of the template (or a pseudo parameter). Exit 1 otherwise."""

import json
import re
import sys

from infra_check import REPO, load_template, report


def main():
    template = load_template()
    wired = template["Resources"]["Dashboard"]["Properties"]["DashboardBody"]
    source = (REPO / "infra" / "cloudwatch" / "dashboard.json").read_text()
    problems = []
    if json.loads(wired) != json.loads(source):
        problems.append("template.yaml's DashboardBody differs from infra/cloudwatch/dashboard.json")
    known = set(template["Parameters"]) | set(template["Resources"])
    for name in sorted(set(re.findall(r"\$\{([A-Za-z0-9:]+)\}", source))):
        if name not in known and not name.startswith("AWS::"):
            problems.append(f"dashboard.json: ${{{name}}} is not a parameter or resource")
    return report(problems, f"dashboard: {len(json.loads(source)['widgets'])} widgets")


if __name__ == "__main__":
    sys.exit(main())
