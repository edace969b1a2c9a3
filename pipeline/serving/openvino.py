"""OpenVINO: openvino-genai in Python (CI runs the script from the demo's packages and it answers) and
OpenVINO Model Server's OpenAI-compatible endpoint (Docker; not started by the pipeline).
Both load the package directory as is: IR, tokenizer and detokenizer models, chat template."""

from __future__ import annotations

import json

from pipeline.serving import Artifact, ServingTarget, ShellVar, register, shell_script

OVMS_IMAGE = "openvino/model_server:2026.4"  # the release beside the OpenVINO the package was made with
GENAI = "openvino-genai==2026.4.1.0"

CHAT = '''"""Chat with {name} through openvino-genai (pip install {genai}), from the package directory.

    python serving/openvino_genai_chat.py "What is the capital of France?"
"""
import sys
from pathlib import Path

import openvino_genai

package = Path(__file__).resolve().parent.parent
pipe = openvino_genai.LLMPipeline(str(package), "CPU")
config = openvino_genai.GenerationConfig(max_new_tokens=int(sys.argv[2]) if len(sys.argv) > 2 else 128, do_sample=False)
history = openvino_genai.ChatHistory([{{"role": "user", "content": sys.argv[1] if len(sys.argv) > 1 else "Hello!"}}])
print(pipe.generate(history, config).texts[0])
'''


@register
class OpenVino(ServingTarget):
    name = "openvino"
    title = "OpenVINO"
    api_path = "/v3"  # OpenVINO Model Server's OpenAI-compatible endpoints

    def serves(self, a: Artifact) -> bool:
        return a.kind == "openvino"

    def files(self, a: Artifact) -> dict[str, str]:
        port = a.options["port"]
        ovms = shell_script(
            f"OpenVINO Model Server for {a.name}: OpenAI-compatible API at http://$HOST:$PORT/v3 "
            "(chat/completions, completions).\n"
            "Serves this package directory read-only from Docker; binds 127.0.0.1 unless HOST is set.",
            [
                "docker",
                "run",
                "--rm",
                "-p",
                ShellVar(f'"${{HOST:-127.0.0.1}}:${{PORT:-{port}}}:{port}"'),
                "-v",
                ShellVar('"$PWD:/model:ro"'),
                OVMS_IMAGE,
                "--rest_port",
                str(port),
                "--model_path",
                "/model",
                "--model_name",
                a.served_model_name,
                "--task",
                "text_generation",
                "--target_device",
                "CPU",
            ],
        )
        return {"ovms.sh": ovms, "openvino_genai_chat.py": CHAT.format(name=json.dumps(a.name)[1:-1], genai=GENAI)}

    def usage(self, a: Artifact) -> str:
        return (
            f"```bash\npip install {GENAI}\ncd {a.name}  # this directory\n"
            'python serving/openvino_genai_chat.py "What is the capital of France?"\n'
            f"serving/ovms.sh   # OpenVINO Model Server in Docker ({OVMS_IMAGE}): OpenAI API at "
            f"http://127.0.0.1:{a.options['port']}/v3\n```\n"
            "The script loads this directory as it is (IR, tokenizer and detokenizer models, "
            "chat template); the evaluation's speed figures, "
            "when there are any, came from openvino-genai on these files. The Model Server command "
            "has not been started by the pipeline.\n"
        )
