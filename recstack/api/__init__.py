"""The Python API (torch-rechub's habit): features → model → trainer, over the same core as the YAML path.

::

    from recstack.api import DenseFeature, DeepFM, SparseFeature, Trainer

    features = [SparseFeature("city", vocab_size=1000, embed_dim=8, hashed=True),
                DenseFeature("price", embed_dim=8, min_val=0, max_val=500)]
    trainer = Trainer(DeepFM(features, features, mlp_params={"dims": [128, 64]}), label="click", epochs=3)
    trainer.fit(train_df)
    trainer.evaluate(test_df)      # {"auc": ...}
    trainer.predict(test_df)       # (n,) probabilities
    trainer.export()               # TorchScript + ONNX + JSON, checked against eager

The feature objects (:mod:`recstack.api.features`) write the EasyRec-style feature config of a
``config_tabular.yaml``; the model constructors (:mod:`recstack.api.models`) name a model folder and its
``hyper_parameters``; the :class:`Trainer` (:mod:`recstack.api.trainer`) runs :func:`recstack.trainer.train`,
:func:`recstack.evaluator.evaluate` and :func:`recstack.export.export_model` on that config. doc/python_api.md.
"""

from recstack.api.data import MemoryReader
from recstack.api.features import DenseFeature, SequenceFeature, SparseFeature
from recstack.api.models import DCN, DIN, DNN, DCNv2, DeepFM, ModelSpec, WideDeep, xDeepFM
from recstack.api.trainer import Trainer, make_config

__all__ = ["DCN", "DCNv2", "DIN", "DNN", "DeepFM", "DenseFeature", "MemoryReader", "ModelSpec", "SequenceFeature",
           "SparseFeature", "Trainer", "WideDeep", "make_config", "xDeepFM"]
