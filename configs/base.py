"""What every experiment config starts from: the Figure 1 MLP on MNIST and the
shared sections, all with their defaults. bn_inception/schema/ holds every
section and documents each field; experiment configs set what they change.

Every paper knob is a field; change any with --config.<section>.<field>=value.
"""

from bn_inception import schema


def get_config():
  return schema.run_config(data=schema.mnist_data_config(), model=schema.mlp_model_config())
