"""What infra/check_*.py share: reading template.yaml and reporting problems."""

import pathlib
import sys

import yaml

REPO = pathlib.Path(__file__).resolve().parent.parent


class TemplateLoader(yaml.SafeLoader):
    """Reads CloudFormation's short tags (!Ref, !Sub, ...) as their plain value."""


def _any_tag(loader, _suffix, node):
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    return loader.construct_mapping(node)


TemplateLoader.add_multi_constructor("!", _any_tag)


def load_template():
    return yaml.load((REPO / "template.yaml").read_text(), Loader=TemplateLoader)


def report(problems, summary):
    """Prints the problems and a summary line; the exit status."""
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"{summary}, {len(problems)} problems")
    return 1 if problems else 0
