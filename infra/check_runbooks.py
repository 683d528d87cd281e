#!/usr/bin/env python3
"""Every alarm links a runbook that exists and has the five sections (tests/run.sh).

- each AWS::CloudWatch::Alarm in template.yaml: its AlarmDescription ends with
  "Runbook: ${RunbookBaseUrl}<page>.md";
- each alert in infra/prometheus/*rules.yml: annotation runbook_url is docs/runbooks/<page>.md;
- each page in docs/runbooks/ (but the index) has, in order, the sections What it means,
  Confirm, Mitigate, Recover, Verify, and is listed in the index;
- docs/operations.md names every alarm and alert.
Prints every problem and exits 1 if there is one.
"""

import re
import sys

import yaml

from infra_check import REPO, load_template, report

RUNBOOKS = REPO / "docs" / "runbooks"
SECTIONS = ["What it means", "Confirm", "Mitigate", "Recover", "Verify"]
ALARM_LINK = re.compile(r"Runbook: \$\{RunbookBaseUrl\}([a-z0-9-]+)\.md$")


def page_problems(page):
    text = (RUNBOOKS / f"{page}.md").read_text()
    headings = [h.split(":")[0].strip() for h in re.findall(r"(?m)^## (.+)$", text)]
    found = [h for h in headings if h in SECTIONS]
    if found != SECTIONS:
        return [f"docs/runbooks/{page}.md: sections {found}, expected {SECTIONS} in order"]
    return []


def main():
    problems = []
    linked = {}
    template = load_template()
    for name, resource in template["Resources"].items():
        if resource.get("Type") != "AWS::CloudWatch::Alarm":
            continue
        description = " ".join(str(resource["Properties"].get("AlarmDescription", "")).split())
        match = ALARM_LINK.search(description)
        if not match:
            problems.append(f"template.yaml {name}: AlarmDescription has no 'Runbook: ${{RunbookBaseUrl}}<page>.md'")
            continue
        linked[name] = match.group(1)
    for rules_file in sorted((REPO / "infra" / "prometheus").glob("*rules.yml")):
        for group in yaml.safe_load(rules_file.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" not in rule:
                    continue
                url = rule.get("annotations", {}).get("runbook_url", "")
                match = re.fullmatch(r"docs/runbooks/([a-z0-9-]+)\.md", url)
                if not match:
                    problems.append(f"{rules_file.name} {rule['alert']}: runbook_url {url!r}")
                    continue
                linked[rule["alert"]] = match.group(1)
    operations = (REPO / "docs" / "operations.md").read_text()
    for alarm, page in sorted(linked.items()):
        if not (RUNBOOKS / f"{page}.md").is_file():
            problems.append(f"{alarm}: docs/runbooks/{page}.md does not exist")
        if alarm not in operations:
            problems.append(f"{alarm}: not named in docs/operations.md")
    index = (RUNBOOKS / "README.md").read_text()
    pages = sorted(p.stem for p in RUNBOOKS.glob("*.md") if p.name != "README.md")
    for page in pages:
        problems += page_problems(page)
        if f"]({page}.md)" not in index:
            problems.append(f"docs/runbooks/{page}.md is not listed in docs/runbooks/README.md")
    return report(problems, f"{len(linked)} alarms and alerts, {len(pages)} runbooks")


if __name__ == "__main__":
    sys.exit(main())
