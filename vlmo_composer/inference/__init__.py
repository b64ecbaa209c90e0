"""The inference API, in open_clip's shape::

    model, preprocess_train, preprocess_val = create_model_and_transforms("vlmo-base-patch16-coco-retrieval")
    tokenizer = get_tokenizer("vlmo-base-patch16-coco-retrieval")
    with torch.no_grad():
        image_features = model.encode_image(preprocess_val(image)[None], normalize=True)
        text_features = model.encode_text(tokenizer(["a cat"]), normalize=True)

* :mod:`.factory`: a name or path -> ``(model, preprocess_train, preprocess_val)``,
  ``get_tokenizer``, and ``export_model`` (the folder it loads back);
* :mod:`.model`: :class:`VLMoCLIP`, the ``nn.Module`` with ``encode_image`` /
  ``encode_text`` / ``logit_scale`` and the fusion encoder's ITM, VQA and NLVR2 scores;
* :mod:`.tokenizer`: :class:`VLMoTokenizer`, ``tokenizer(texts) -> [N, context_length]`` ids;
* :mod:`.helpers`: :class:`VLMoInference`, the tasks over files and galleries (retrieval
  with ITM re-ranking, zero-shot classification, VQA answers, NLVR2) over :mod:`.inputs`
  (images as PIL images, paths, bytes or pixels; texts as strings or ids).
"""

from vlmo_composer.inference.factory import (
    create_model,
    create_model_and_transforms,
    export_model,
    get_tokenizer,
    load_model,
)
from vlmo_composer.inference.helpers import NLVR2Prediction, RetrievalHits, VLMoInference
from vlmo_composer.inference.model import VLMoCLIP
from vlmo_composer.inference.tokenizer import VLMoTokenizer

__all__ = [
    "NLVR2Prediction",
    "RetrievalHits",
    "VLMoCLIP",
    "VLMoInference",
    "VLMoTokenizer",
    "create_model",
    "create_model_and_transforms",
    "export_model",
    "get_tokenizer",
    "load_model",
]
