"""Every savl architecture that `savl.models.io.load_model` can rebuild from a model file's JSON config.

One table, name -> (builder, config class): `load_model` reads the name from the JSON sidecar and calls
`builder(config_class(**config))`. The name is the class's `architecture` attribute, which `save_model` writes.
To add an architecture, give its class an `architecture` name and a dataclass `.config`, and add a row here.
This module imports the model modules (and the baselines', `savl.baselines`); they never import it (or
`savl.models.io`), so there is no cycle.
"""

from collections.abc import Callable

from savl.baselines.dacesr import DACESRConfig, DACESRNet, RealEmbeddingExtractor, REEConfig
from savl.baselines.redsr import Degrader, ReDSRConfig, ReDSRNet
from savl.models.decoder import Decoder, DecoderConfig
from savl.models.discriminator import DiscriminatorConfig, UNetDiscriminatorSN, build_discriminator
from savl.models.encoder import AmortizedEncoder, EncoderConfig
from savl.models.rrdb_sft import RRDBSFTConfig, RRDBSFTNet
from savl.models.savl import SAVL, SAVLConfig
from savl.models.srnet import DARHAGNet, SRNetConfig

ARCHITECTURES: dict[str, tuple[Callable, type]] = {
    AmortizedEncoder.architecture: (AmortizedEncoder, EncoderConfig),
    Decoder.architecture: (Decoder, DecoderConfig),
    SAVL.architecture: (SAVL.from_config, SAVLConfig),
    DARHAGNet.architecture: (DARHAGNet, SRNetConfig),
    UNetDiscriminatorSN.architecture: (build_discriminator, DiscriminatorConfig),
    # The baselines (savl.baselines): ReDSR's SR net (encoder + generator) and degrader, DACESR's SR net and REE.
    ReDSRNet.architecture: (ReDSRNet, ReDSRConfig),
    Degrader.architecture: (Degrader, ReDSRConfig),
    DACESRNet.architecture: (DACESRNet, DACESRConfig),
    RealEmbeddingExtractor.architecture: (RealEmbeddingExtractor, REEConfig),
    RRDBSFTNet.architecture: (RRDBSFTNet, RRDBSFTConfig),
}

__all__ = ["ARCHITECTURES"]
