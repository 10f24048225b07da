"""The model zoo: the networks themselves (``nn.Module`` definitions and their factories).

One module per family: :mod:`.vgg` (VGG, AlexNet, LeNet), :mod:`.mlp`, :mod:`.resnet`, :mod:`.mnist1d`. Which name
builds which network, and how a state dict's sizes are read back, is the registry's business
(:mod:`relugeom.architectures`); adding an architecture is one factory here and one
``register_architecture`` line there.
"""
