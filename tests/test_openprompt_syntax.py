"""Templates written in OpenPrompt's syntax are accepted and converted to ours."""

import pytest

from prompting.core.template import Field, Mask, Soft, Template, TemplateError, from_openprompt


@pytest.mark.parametrize("openprompt, ours", [
    ('{"placeholder":"text_a"} It was {"mask"}.', "{text_a} It was {mask}."),
    ('{"placeholder": "text_a", "shortenable": true} {"soft": null, "duplicate": 3} {"mask"}',
     "{text_a} {soft:3} {mask}"),
    ('{"placeholder":"text_a", "shortenable": True} {"soft": "It was"} {"mask"}', '{text_a} {soft:"It was"} {mask}'),
    ('{"meta": "premise"} Question: {"meta": "hypothesis"}? {"text": "Answer:"} {"mask"}',
     "{premise} Question: {hypothesis}? Answer: {mask}"),
    ('{"soft"} {"placeholder":"text_a"} {"mask"}', "{soft:1} {text_a} {mask}"),
])
def test_openprompt_templates_convert(openprompt, ours):
    assert from_openprompt(openprompt) == ours
    template = Template(openprompt)
    assert template.text == ours
    assert template == Template(ours)


def test_converted_template_has_the_same_parts():
    parts = Template('{"placeholder":"text_a"} {"soft": null, "duplicate": 2} It was {"mask"}.').parts
    assert [type(p) for p in parts if not hasattr(p, "text")] == [Field, Soft, Mask]
    assert [p for p in parts if isinstance(p, Soft)][0].count == 2


@pytest.mark.parametrize("bad", ['{"placeholder": } x {"mask"}', '{"shape": "x"} {"mask"}'])
def test_unknown_openprompt_slots_are_errors(bad):
    with pytest.raises(TemplateError, match="OpenPrompt slot"):
        Template(bad)
