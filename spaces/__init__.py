"""What can be searched: backbones, aux heads, the Decoupling, and building a decoupled net."""

from bwbpf.spaces import graph_backbone  # noqa: F401 - resolves named networks
from bwbpf.spaces.backbone_spec import UnitInfo, stage_boundaries
from bwbpf.spaces.backbones import get_backbone, list_backbones
from bwbpf.spaces.decoupling import AuxSpec, BlockOptim, Decoupling, from_document
from bwbpf.spaces.document import SCHEMA_ID, to_document
from bwbpf.spaces.encoding import params_for, reference_decouplings, sample, unused_params
from bwbpf.spaces.errors import ConfigError, UserError
from bwbpf.spaces.heads import AuxHead, HeadPlace, list_aux_heads, make_aux_head
from bwbpf.spaces.named_nets import file_stem, is_named
from bwbpf.spaces.net import DecoupledNet, build
from bwbpf.spaces.partition import balanced_cuts
from bwbpf.spaces.registry import Registry
from bwbpf.spaces.space import SearchSpace, fit_to_networks
from bwbpf.spaces.transfer import RelativeCut, transfer

__all__ = [
    "AuxHead",
    "AuxSpec",
    "BlockOptim",
    "ConfigError",
    "DecoupledNet",
    "HeadPlace",
    "Registry",
    "RelativeCut",
    "SCHEMA_ID",
    "SearchSpace",
    "Decoupling",
    "UnitInfo",
    "UserError",
    "balanced_cuts",
    "build",
    "file_stem",
    "fit_to_networks",
    "is_named",
    "from_document",
    "get_backbone",
    "list_aux_heads",
    "list_backbones",
    "make_aux_head",
    "params_for",
    "reference_decouplings",
    "sample",
    "stage_boundaries",
    "to_document",
    "transfer",
    "unused_params",
]
