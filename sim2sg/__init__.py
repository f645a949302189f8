"""sim2sg: self-supervised real-to-sim scene generation (Sim2SG, Prakash et al., ICCV 2021).

Data flows one way, one module per arrow:
environment file -> sampler -> scene graph -> USD stage -> rasterizer -> labelled sample
-> dataset -> trainer -> predicted graphs -> lift -> scene graph.
"""

__version__ = "0.1.0"
