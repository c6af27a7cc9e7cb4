"""YAML as configs and prompt files are read: safe, ``1e-5`` a number, a key given twice an error, and
label words kept as written (``Yes`` stays a word)."""

from __future__ import annotations

import re

import yaml

__all__ = ["YamlLoader", "load_yaml"]


class YamlLoader(yaml.SafeLoader):
    """Safe YAML that also reads ``1e-5`` (no dot) as a number, not as the text "1e-5", reads only
    ``true`` and ``false`` as booleans (YAML 1.2: ``yes``, ``no``, ``on``, ``off`` are words, as label
    names and words in a task often are), and refuses a key given twice in one mapping (YAML would keep
    the last one silently: a second ``methods:`` would replace the first)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True) if isinstance(key_node, yaml.ScalarNode) else None
            if key is not None and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice in one mapping; keep one", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))
# YAML 1.1 also reads yes/no/on/off (and y/n) as booleans: only true and false are, as in YAML 1.2
YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in YamlLoader.yaml_implicit_resolvers.items()}
YamlLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                 list("tTfF"))


_BOOL, _STR, _MAP = "tag:yaml.org,2002:bool", "tag:yaml.org,2002:str", "tag:yaml.org,2002:map"


def _child(node, key: str):
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == key:
                return v
    return None


def _words_as_written(document) -> None:
    """Label words are words: YAML 1.1 reads ``Yes``, ``No``, ``True``, ``on`` as booleans, which
    would turn the verbalizer ``[Yes]`` into the word "true". Retag them as text before construction
    (in prompt files' and inline ``templates:`` verbalizers, and a method's ``verbalizer``). Label names
    are names too: the task section's ``labels`` (a list of names, or the names a file's values map to)
    and ``label_map``'s names keep the words written (``{false: no, true: yes}`` names the labels "no"
    and "yes"). Booleans anywhere else (``train: false``, a file's values, sweep choices) stay booleans."""
    def retag(verbalizer):
        if isinstance(verbalizer, yaml.MappingNode):
            for _, words in verbalizer.value:
                for word in words.value if isinstance(words, yaml.SequenceNode) else [words]:
                    if isinstance(word, yaml.ScalarNode) and word.tag == _BOOL:
                        word.tag = _STR

    for holder in (document, _child(document, "templates")):
        verbalizers = _child(holder, "verbalizers")
        for verbalizer in verbalizers.value if isinstance(verbalizers, yaml.SequenceNode) else []:
            retag(verbalizer)
    methods = _child(document, "methods")
    for method in methods.value if isinstance(methods, yaml.SequenceNode) else []:
        retag(_child(method, "verbalizer"))
    task = _child(document, "task")
    for key in ("labels", "label_map"):
        names = _child(task, key)
        if isinstance(names, yaml.SequenceNode):
            names = yaml.MappingNode(_MAP, [(item, item) for item in names.value])
        retag(names)


def load_yaml(text: str) -> list:
    """Every document of a config or prompt file (see :class:`YamlLoader` and :func:`_words_as_written`)."""
    loader = YamlLoader(text)
    try:
        documents = []
        while loader.check_node():
            node = loader.get_node()
            _words_as_written(node)
            documents.append(loader.construct_document(node))
        return documents
    finally:
        loader.dispose()
