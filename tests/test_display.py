"""hierarchy.tag display paths."""

from tagger.pipeline.display import TagFormatter

CLASSES = {
    "": "BertModel",
    "encoder": "BertEncoder",
    "encoder.layer": "ModuleList",
    "encoder.layer.0": "BertLayer",
    "encoder.layer.0.attention": "BertAttention",
    "encoder.layer.0.attention.self": "BertSelfAttention",
    "encoder.layer.0.attention.self.query": "Linear",
    "encoder.layer.0.attention.self.key": "Linear",
    "encoder.layer.0.attention.output": "BertSelfOutput",
}


def test_class_path_with_transparent_module_list_and_shared_sibling_classes():
    fmt = TagFormatter(CLASSES)
    assert fmt("encoder.layer.0.attention.self") == "/BertModel/BertEncoder/BertLayer.0/BertAttention/BertSelfAttention"
    assert fmt("encoder.layer.0.attention.self.query").endswith("/BertSelfAttention/Linear.query")
    assert fmt("") == "/BertModel"


def test_plain_paths_keep_list_indices_on_their_list_when_no_class_is_known():
    fmt = TagFormatter({})
    assert fmt("encoder.layer.0.attention.self") == "/encoder/layer.0/attention/self"
    assert fmt("") == "/"


def test_qualified_class_names_are_shortened():
    assert TagFormatter({"": "transformers.models.bert.modeling_bert.BertModel"})("") == "/BertModel"
