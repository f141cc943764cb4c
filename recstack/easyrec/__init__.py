"""The EasyRec-style configuration: what a model reads when its YAML describes data, features and tasks
the EasyRec way (``hyper_parameters.data_config`` / ``feature_config`` / ``model_config``).

Everything here is built from the config; the generic pieces it composes stay below it
(:mod:`recstack.layers`, :mod:`recstack.data.base`, :mod:`recstack.metrics`, :mod:`recstack.wrapper`).
By EasyRec config section:

==============================================  ===============================================================
EasyRec section                                 module
==============================================  ===============================================================
(any nested section)                            :mod:`~recstack.easyrec.schema`: typed, key-by-key reads;
                                                an unknown key is an error naming the closest known one
``data_config`` (``input_fields``,              :mod:`~recstack.easyrec.features`: :class:`TabularSpec` (input
``label_fields``, ``separator``,                fields, labels, ``GroupInput``); the readers that parse it:
``input_type``)                                 :mod:`~recstack.easyrec.tabular` (``CSVInput``, core reader
                                                ``tabular``), :mod:`~recstack.easyrec.group_rtp`
                                                (``GroupRTPInput``, core reader ``group_rtp``)
``feature_config.features``                     :mod:`~recstack.easyrec.features` (``IdFeature``,
(``IdFeature``, ``RawFeature``, ...)            ``RawFeature``, ``ImgFeature``, ``SampleNumFeature``)
``vocab_list`` / ``vocab_file`` / ``vocab``     :mod:`~recstack.easyrec.vocab` (vocabulary files, OOV buckets, the
                                                export's copies); :mod:`~recstack.easyrec.build_vocab` (fitted
                                                from the training data, ``tools/build_vocab.py``)
``model_config.feature_groups``                 :mod:`~recstack.easyrec.features` (``FeatureGroup``);
                                                :mod:`~recstack.easyrec.feature_embedding` (each group as one
                                                ``(B, D_g)`` tensor); :mod:`~recstack.easyrec.tabular_fields`
                                                (the groups as the rank nets' fields,
                                                :class:`~recstack.layers.field_inputs.FieldInputs`)
``model_config.<model>.task_towers``            :mod:`~recstack.easyrec.tasks` (tower specs, ``loss_type`` and
(``loss_type``, ``metrics_set``, ``dnn``,       ``metrics_set`` looked up by name in
``relation_dnn``, ``weight``)                   :data:`recstack.registry.LOSSES` / :data:`~recstack.registry.METRICS`,
                                                the :class:`TaskTowerWrapper`); :mod:`~recstack.easyrec.task_tower`
                                                (the towers and DBMTL's relation chain)
``model_config.dbmtl``                          :mod:`~recstack.easyrec.dbmtl` (the DBMTL network, shared by
                                                ``models/multitask/dbmtl`` and ``e2e_mm_dbmtl``)
==============================================  ===============================================================

EasyRec's own ``pipeline.config`` (protobuf text) becomes this YAML with ``tools/easyrec_config.py``:
:mod:`~recstack.easyrec.pbtxt` reads the text format, :mod:`~recstack.easyrec.convert` maps it and lists
what does not carry over (doc/easyrec_config.md).

The rank models choose between PaddleRec's slot keys and this feature config in
:mod:`recstack.rank_inputs`. Import the modules themselves (``from recstack.easyrec.features import
TabularSpec``); this package's ``__init__`` imports nothing, so reading a config does not load torch.
"""
