"""Our Jinja chat template, laid out like Qwen2.5-VL's (written here, not copied).

Layout (what Qwen2.5-VL-Instruct renders for the same conversation):

    <|im_start|>system
    You are a helpful assistant.<|im_end|>
    <|im_start|>user
    Original image: <|vision_start|><|image_pad|><|vision_end|>
    Depth image: <|vision_start|><|image_pad|><|vision_end|>
    {question} Please first output ...<|im_end|>
    <|im_start|>assistant
    <think>...</think>
    <answer>...</answer><|im_end|>

The processor expands each `<|image_pad|>` to the image's number of merged patches. The assistant's
content and its closing `<|im_end|>` sit inside `{% generation %}` markers, so TRL's
`assistant_only_loss` trains exactly the tokens the model must produce, including the stop token.
"""

from __future__ import annotations

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."

# Whitespace control ({%- -%}) keeps the template readable without leaking newlines into the prompt;
# every newline that belongs to the layout is written explicitly as '\n'.
CHAT_TEMPLATE = (
    "{%- set image_count = namespace(value=0) -%}"
    "{%- set video_count = namespace(value=0) -%}"
    "{%- macro render_content(content) -%}"
    "{%- if content is string -%}{{- content -}}"
    "{%- else -%}"
    "{%- for part in content -%}"
    "{%- if part['type'] == 'image' or 'image' in part or 'image_url' in part -%}"
    "{%- set image_count.value = image_count.value + 1 -%}"
    "{%- if add_vision_id -%}{{- 'Picture ' ~ image_count.value ~ ': ' -}}{%- endif -%}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif part['type'] == 'video' or 'video' in part -%}"
    "{%- set video_count.value = video_count.value + 1 -%}"
    "{%- if add_vision_id -%}{{- 'Video ' ~ video_count.value ~ ': ' -}}{%- endif -%}"
    "{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- elif 'text' in part and part['text'] is not none -%}{{- part['text'] -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{%- endmacro -%}"
    "{%- if messages[0]['role'] != 'system' -%}"
    "{{- '<|im_start|>system\\n" + DEFAULT_SYSTEM_PROMPT + "<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- generation -%}"
    "{{- render_content(message['content']) -}}{{- '<|im_end|>' -}}"
    "{%- endgeneration -%}"
    "{{- '\\n' -}}"
    "{%- else -%}"
    "{{- '<|im_start|>' ~ message['role'] ~ '\\n' -}}"
    "{{- render_content(message['content']) -}}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)
