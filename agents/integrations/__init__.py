"""Optional integrations of MedVR with outside trainers (each imported only when used; core modules never import them).

- :mod:`agents.integrations.verl`: MedVR on verl 0.9.1 (Ray): the agent loop, the EVR/CCA group worker, top-k
  entropy from vLLM, and a launcher. Install with ``pip install "medvr[verl]"``.
"""
