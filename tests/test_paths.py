"""Module-path normalisation: exporter scopes become real named_modules() paths."""

from tagger.model.paths import ModuleSet, is_within, lca, scope_segments


def test_scope_segments_split_scoped_names_and_ignore_flat_ones():
    assert scope_segments("/m/encoder/layer.0/attention/self/MatMul") == ["m", "encoder", "layer.0", "attention", "self"]
    assert scope_segments("/Shape") == []
    assert scope_segments("model/dense/MatMul") == ["model", "dense"]
    assert scope_segments("Conv_124") is None
    assert scope_segments("onnx::MatMul_352") is None


def test_sequential_child_repeating_its_parent_segment_is_undone_without_a_module_map():
    assert ModuleSet().resolve(["layer", "layer.0", "convolution"]) == "layer.0.convolution"


def test_second_call_suffix_is_stripped_only_when_the_stripped_path_exists():
    modules = ModuleSet()
    modules.add("albert_layers.0.attention")
    modules.add("fc_1")
    assert modules.resolve(["albert_layers.0_1", "attention_1"]) == "albert_layers.0.attention"
    assert modules.resolve(["fc_1"]) == "fc_1"


def test_a_parameter_free_child_of_a_sequential_called_twice_is_its_first_call_module():
    """TorchScript scopes the second call of a Sequential `blocks.0` as `/blocks.0/blocks.0.2_1`
    (its GELU, which no parameter names): the literal base scope `/blocks.0/blocks.0.2` seen under
    the same caller makes the suffix a second call, not a module `blocks.0.2_1`."""
    modules = ModuleSet()
    modules.add("m.blocks.0.1")
    modules.observe(["m", "blocks.0", "blocks.0.2"])
    assert modules.resolve(["m", "blocks.0", "blocks.0.2_1"]) == "m.blocks.0.2"
    assert ModuleSet().resolve(["m", "blocks.0", "blocks.0.2_1"]) == "m.blocks.0.2_1"  # nothing seen: literal


def test_unknown_suffix_is_kept_literally_when_nothing_says_otherwise():
    assert ModuleSet().resolve(["block_2", "conv"]) == "block_2.conv"


def test_an_authoritative_set_learns_nothing_and_leaves_unknown_scopes_unknown():
    """A scope outside the true tree is no module-call naming (a converter's vocabulary: the
    builder's `/model/layers.2/final_norm_layernorm` is `model.norm`), so no prefix of it is
    claimed either; `tagger.evidence.collect` drops it and inference bounds the node."""
    modules = ModuleSet()
    modules.adopt(["encoder.layer.0"])
    modules.add("encoder.layer.0.functional_scope")
    assert "encoder.layer.0.functional_scope" not in modules and "encoder" in modules
    assert modules.resolve(["encoder", "layer.0", "functional_scope"]) not in modules


def test_lca_and_within():
    assert lca("a.b.c", "a.b.d") == "a.b"
    assert lca("a.b", "x") == ""
    assert lca(None, "a") == "a"
    assert is_within("a.b.c", "a.b") and is_within("a", "") and not is_within("a.bc", "a.b")


def test_a_segment_reaches_a_known_module_through_an_uncalled_container_only():
    """`/decoder/...` is `model.decoder` when `model` has no scope of its own (an uncalled
    container), but `/layer.0/output/...` is not `layer.0.attention.output` when the file's names
    show `attention` called (`/layer.0/attention/self/...`)."""
    modules = ModuleSet()
    modules.add("model.decoder.block.0")
    assert modules.resolve(["decoder", "block.0"]) == "model.decoder.block.0"
    modules.add("encoder.layer.0.attention.output.LayerNorm")
    modules.observe(["encoder", "layer.0", "attention", "self", "query"])
    assert modules.resolve(["encoder", "layer.0", "output", "dense"]) == "encoder.layer.0.output.dense"


def test_a_scope_reading_a_known_module_by_another_path_is_that_module_but_not_a_clone_in_a_list():
    """T5's `/decoder/shared` reads `shared.weight`: the one tied module. `/m/layers.1/self_attn`
    reading `m.layers.0.self_attn.*` is another list entry, a deep-copied clone whose equal
    (fresh) parameters the exporter stored once: it stays `m.layers.1.self_attn`."""
    modules = ModuleSet()
    modules.add("shared")
    modules.add("m.layers.0.self_attn")
    modules.read_shared(["decoder", "shared"], ["shared"])
    modules.read_shared(["m", "layers.1", "self_attn"], ["m.layers.0.self_attn"])
    assert modules.resolve(["decoder", "shared"]) == "shared"
    assert modules.resolve(["m", "layers.1", "self_attn"]) == "m.layers.1.self_attn"


def test_a_scope_naming_several_list_entries_alike_is_read_as_none_of_them():
    """A list its caller runs by `layer.forward(x)` leaves the entries out of every TorchScript
    scope (SqueezeBERT's `/encoder/attention_1`): the segment is the unqualified name of the same
    module in every entry, and `_1` counts calls of that name, so the scope names no one module."""
    modules = ModuleSet()
    for path in ("m.encoder.layers.0.attention.query", "m.encoder.layers.1.attention.query"):
        modules.add(path)
    assert modules.resolve(["m", "encoder", "attention_1"]) is None
    assert modules.resolve(["m", "encoder", "attention", "query_1"]) is None
    modules.add("m.decoder.attention")  # one entry only: the name says which
    assert modules.resolve(["m", "decoder", "attention"]) == "m.decoder.attention"
