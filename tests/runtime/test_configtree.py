"""Config flattening has one owner: run params, a reproduction's config comparison and the
server's list of keys all read `a.b.c` keys from `tl.runtime.configtree.flat`."""

from omegaconf import OmegaConf

from tl.runtime.configtree import flat


def test_a_nested_config_flattens_to_dotted_keys_with_lists_as_leaves():
    tree = OmegaConf.create({"model": {"name": "resnet18", "head": {"dropout": 0.1}}, "seed": 0,
                             "dataset": {"mean": [0.5, 0.5]}, "empty": {}})
    assert flat(tree) == {"model.name": "resnet18", "model.head.dropout": 0.1, "seed": 0,
                          "dataset.mean": [0.5, 0.5]}
