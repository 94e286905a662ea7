"""BERT (and BERT-shaped checkpoints such as all-MiniLM-L6-v2): a bidirectional encoder.

Its embeddings module adds learned positions and token types itself, so the soft prompt enters it as
``inputs_embeds`` (with token type 0); it classifies through the pretrained pooler (the [CLS] position when
the checkpoint has none) and a new ``classifier``.
"""

from __future__ import annotations

from node.model.families import Family, register_family


class Bert(Family):
    name = "bert"
    model_types = ("bert",)
    causal = False
    learned_positions = True

    embeddings = "bert.embeddings"
    layers = "bert.encoder.layer"
    classifier = "classifier"
    word_embeddings = "word_embeddings"

    lora_targets = ("query", "value")
    ia3_targets = r"attention\.self\.(key|value)|output\.dense"
    ia3_feedforward = r"output\.dense"
    bottleneck_points = {"attn": ("attention.output.dense", "attention.output.LayerNorm"),
                         "ffn": ("output.dense", "output.LayerNorm")}

    def head_paths(self, task: str) -> dict[str, str]:
        # the pooler belongs to the base model and is pretrained; it runs after the last layer, so the
        # last shard holds it with the head
        return {"dropout": "dropout", self.classifier: self.classifier, "pooler": "bert.pooler"}

    def embed(self, embeddings, input_ids, prompt, token_type_ids, position_ids):
        import torch

        words = self.words(embeddings, input_ids, prompt)
        if prompt is not None and token_type_ids is not None:
            b, n = prompt.shape[:2]
            token_type_ids = torch.cat([token_type_ids.new_zeros((b, n)), token_type_ids], dim=1)
        return embeddings(inputs_embeds=words, token_type_ids=token_type_ids, position_ids=position_ids)

    def classify(self, head: dict, h, mask2d):
        pooled = head["pooler"](h) if "pooler" in head else h[:, 0]
        return head[self.classifier](head["dropout"](pooled))


register_family(Bert())
