"""SINGER reference model (Li et al.): Hallo backbone + Multi-scale Spectral Module + Self-adaptive Filter Module.

Public API: :class:`singer_model.config.SingerConfig`, :class:`singer_model.model.SingerNet`,
:mod:`singer_model.checkpoints` (loaders), :mod:`singer_model.layout` (published key layouts),
:mod:`singer_model.plan` (compute plan).
"""
