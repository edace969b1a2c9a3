"""Every serving target's files for every artifact kind parse as their tools read them (YAML with vLLM's
option names, TGI env/launcher options, Kubernetes schema, Modelfile, bash), and each kind gets the
targets that can serve it."""

from __future__ import annotations

import sys

import pytest

from pipeline import serving
from pipeline.recipe import ServingSpec
from pipeline.serving.chat_templates import match, render_jinja
from tests.conftest import cli, tiny_recipe, write_recipe
from tests.helpers import check_serving, long_flags, tool_flags

SMOL_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' "
    "%}{{ '<|im_start|>system\nYou are a "
    "helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif "
    "%}{{'<|im_start|>' + message['role'] + "
    "'\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt "
    "%}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] "
    "+ '<|end_header_id|>\n\n' + "
    "message['content'] | trim + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt "
    "%}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


def artifact(kind: str, **kw) -> serving.Artifact:
    base = dict(
        name=f"demo-{kind}",
        kind=kind,
        description=kind,
        served_model_name=f"demo-{kind}",
        max_model_len=4096,
        size_bytes=3 << 30,
        base_model="org/Base-1B",
        options=ServingSpec().model_dump(mode="json"),
        chat_template=SMOL_TEMPLATE,
    )
    if kind == "gguf":
        base |= {"gguf_file": "model-Q4_K_M.gguf", "gguf_shards": 1}
    if kind == "bitsandbytes":
        base |= {"bnb_quantize": "bitsandbytes-nf4"}
    return serving.Artifact(**(base | kw))


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("compressed-tensors", ["vllm", "tgi", "kubernetes"]),
        ("bitsandbytes", ["tgi"]),  # vLLM 0.32/0.33 core loads no bitsandbytes, so no vLLM (nor vLLM-based k8s) target
        ("gguf", ["llama-cpp", "ollama", "kubernetes"]),  # nor GGUF (vllm-gguf-plugin)
        ("openvino", ["openvino"]),  # OpenVINO IR: openvino-genai and OpenVINO Model Server only
    ],
)
def test_every_file_parses_for_its_tool(tmp_path, kind, expected):
    a = artifact(kind)
    assert serving.write(a, tmp_path) == expected
    parsed = check_serving(tmp_path / "serving")
    if kind == "compressed-tensors":
        vllm, cpu = parsed["vllm.yaml"], parsed["vllm-cpu.yaml"]
        assert (
            vllm["max-model-len"] == 4096
            and vllm["served-model-name"] == a.served_model_name
            and "quantization" not in vllm
        )
        assert parsed["vllm.sh"][:4] == ["vllm", "serve", "--config", "serving/vllm.yaml"]
        # the CPU build refuses a memory fraction it cannot reserve: it gets a KV-cache size and starts eager
        assert (
            "gpu-memory-utilization" not in cpu
            and cpu["kv-cache-memory-bytes"] == 2 << 30
            and cpu["enforce-eager"] is True
        )
        assert {k: v for k, v in cpu.items() if k not in ("kv-cache-memory-bytes", "enforce-eager")} == {
            k: v for k, v in vllm.items() if k not in ("gpu-memory-utilization", "tensor-parallel-size")
        }
    if kind == "openvino":
        ovms = parsed["ovms.sh"]
        assert ovms[:2] == ["docker", "run"] and ovms[ovms.index("--model_name") + 1] == a.served_model_name
        assert ovms[ovms.index("-p") + 1].startswith(
            "${HOST:-127.0.0.1}:"
        )  # published on loopback unless HOST says otherwise
        return
    if kind == "bitsandbytes":
        assert "vLLM's core no longer loads bitsandbytes" in (tmp_path / "serving" / "tgi.env").read_text()
        env = parsed["tgi.env"]  # TGI quantizes the unquantized model itself at load
        assert env["QUANTIZE"] == "bitsandbytes-nf4" and env["MODEL_ID"] == "org/Base-1B"
        return
    k8s = next(k for k in parsed if k.startswith("k8s-"))
    deployment, service = parsed[k8s]
    assert "&id" not in (tmp_path / "serving" / k8s).read_text()  # plain YAML, no anchors
    assert deployment["metadata"]["name"] == f"demo-{kind}-{'llama-cpp' if kind == 'gguf' else 'vllm'}"
    pod = deployment["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert all(c[p]["httpGet"]["path"] == "/health" for p in ("readinessProbe", "livenessProbe", "startupProbe"))
    assert c["volumeMounts"][0]["readOnly"] and pod["volumes"][0]["persistentVolumeClaim"]["readOnly"]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    if kind == "gguf":
        assert "nvidia.com/gpu" not in c["resources"]["limits"] and "--jinja" in c["args"]
        assert parsed["llama-server.sh"][parsed["llama-server.sh"].index("--ctx-size") + 1] == "4096"
    else:
        assert (
            vllm["model"] == "."
            and c["resources"]["limits"]["nvidia.com/gpu"] == 1
            and c["command"] == ["vllm", "serve"]
        )
        env = parsed["tgi.env"]
        assert env["MAX_TOTAL_TOKENS"] == "4096" and int(env["MAX_INPUT_TOKENS"]) < 4096
        assert "QUANTIZE" not in env  # compressed-tensors: TGI reads config.json


def test_recipe_serving_settings_reach_every_file(tmp_path):
    spec = ServingSpec(
        max_model_len=2048,
        tensor_parallel_size=2,
        gpu_memory_utilization=0.8,
        vllm_args={"enable-prefix-caching": True},
        tgi_args={"max-concurrent-requests": 64},
        port=9000,
    )
    a = artifact("compressed-tensors", options=spec.model_dump(mode="json"), max_model_len=2048)
    serving.write(a, tmp_path)
    parsed = check_serving(tmp_path / "serving")
    v = parsed["vllm.yaml"]
    assert (v["tensor-parallel-size"], v["gpu-memory-utilization"], v["enable-prefix-caching"], v["port"]) == (
        2,
        0.8,
        True,
        9000,
    )
    assert parsed["tgi.env"]["NUM_SHARD"] == "2" and parsed["tgi.env"]["MAX_CONCURRENT_REQUESTS"] == "64"
    container = parsed["k8s-vllm.yaml"][0]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2 and "--enable-prefix-caching" in container["args"]


def test_only_the_targets_the_recipe_names(tmp_path):
    assert serving.write(artifact("gguf"), tmp_path, ["ollama", "llama-cpp"]) == ["llama-cpp", "ollama"]
    assert sorted(p.name for p in (tmp_path / "serving").iterdir()) == [
        "Modelfile",
        "llama-cpp-python.sh",
        "llama-server.sh",
    ]


def test_split_gguf_goes_to_llama_cpp_only(tmp_path):
    names = serving.write(artifact("gguf", gguf_file="model-Q4_K_M-00001-of-00003.gguf", gguf_shards=3), tmp_path)
    assert names == ["llama-cpp", "kubernetes"]  # Ollama loads single-file GGUFs only


def test_llama_cpp_scripts_use_real_options(tmp_path):
    """Every option of the generated commands is one llama-server / llama_cpp.server lists in its --help."""
    from pipeline.tools import llamacpp_toolchain

    chain = llamacpp_toolchain.find()
    if chain is None:
        pytest.skip("llama.cpp toolchain not built (python -m pipeline setup llama-cpp)")
    serving.write(artifact("gguf", options=ServingSpec(threads=2).model_dump(mode="json")), tmp_path)
    parsed = check_serving(tmp_path / "serving")
    server = long_flags(parsed["llama-server.sh"])
    assert set(server) <= tool_flags([str(chain.tool("llama-server"))]), server
    python = long_flags(parsed["llama-cpp-python.sh"])
    assert set(python) <= tool_flags([sys.executable, "-m", "llama_cpp.server"]), python


def test_modelfile_template_renders_like_the_model_template(tmp_path):
    serving.write(artifact("gguf"), tmp_path, ["ollama"])
    ins = dict((k, v) for k, v in check_serving(tmp_path / "serving")["Modelfile"] if k != "PARAMETER")
    params = [v for k, v in check_serving(tmp_path / "serving")["Modelfile"] if k == "PARAMETER"]
    assert ins["FROM"] == "../model-Q4_K_M.gguf" and "{{ .Content }}<|im_end|>" in ins["TEMPLATE"]
    assert ins["SYSTEM"] == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    assert 'stop "<|im_end|>"' in params and "num_ctx 4096" in params


@pytest.mark.parametrize(
    "template, family, system",
    [
        (SMOL_TEMPLATE, "chatml", "You are a helpful AI assistant named SmolLM, trained by Hugging Face"),
        (LLAMA3_TEMPLATE, "llama3", None),
    ],
)
def test_chat_template_families(template, family, system):
    found = match(template, {"bos_token": "<|begin_of_text|>"})
    assert found is not None and found[0].name == family and found[1] == system
    msgs = [{"role": "user", "content": "2+2?"}]
    assert found[0].render(([{"role": "system", "content": system}] if system else []) + msgs) == render_jinja(
        template, msgs, {"bos_token": ""}
    )


def test_unknown_template_gets_no_template_line(tmp_path):
    odd = "{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}### assistant:"
    assert match(odd, {}) is None
    serving.write(artifact("gguf", chat_template=odd), tmp_path, ["ollama"])
    assert "TEMPLATE" not in dict(check_serving(tmp_path / "serving")["Modelfile"])


@pytest.mark.parametrize(
    "section, message",
    [
        (
            {"vllm_args": {"enable-prefix-cache": True}},
            "r.yaml:9: package.serving.vllm_args: 'enable-prefix-cache' is not a `vllm serve` "
            "option (did you mean 'enable-prefix-caching'?)",
        ),
        ({"tgi_args": {"max-batch-tokens": 10}}, "is not a `text-generation-launcher` option"),
        ({"targets": ["triton"]}, "unknown serving target 'triton'"),
    ],
)
def test_recipe_rejects_unknown_options_and_targets(tmp_path, tiny_model, section, message):
    recipe = write_recipe(
        tmp_path / "r.yaml", tiny_recipe(tiny_model, [{"format": "w8a16"}], package={"serving": section})
    )
    proc = cli("plan", str(recipe))
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


GIB = 1 << 30
EXPERTS = serving.Experts(  # Qwen3-30B-A3B at ~Q4_K_M: 48 layers of 128 experts, 0.3 GiB of them per layer
    total_params=30_532_122_624,
    active_params=3_350_000_000,
    count=128,
    per_token=8,
    bytes_per_layer={i: 3 * GIB // 10 for i in range(48)},
    other_bytes=2 * GIB,
)


def test_moe_gguf_gets_an_expert_offload_script_and_its_memory_table(tmp_path):
    a = artifact("gguf", experts=EXPERTS)
    serving.write(a, tmp_path)
    argv = check_serving(tmp_path / "serving")["llama-server-moe.sh"]
    assert argv[argv.index("--n-cpu-moe") + 1] == "${N_CPU_MOE:-48}" and argv[argv.index("--n-gpu-layers") + 1] == "999"
    usage = serving.TARGETS["llama-cpp"].usage(a)
    rows = {int(r.split("|")[1]): r.split("|")[2:4] for r in usage.splitlines() if r.startswith("| ") and "N_" not in r}
    assert set(rows) == {0, 12, 24, 36, 48}
    assert [float(x) for x in rows[0]] == [16.4, 0.0]  # everything on the GPU: 2 + 48 x 0.3 GiB
    assert [float(x) for x in rows[48]] == [2.0, 14.4]  # --cpu-moe: the experts in RAM
    assert [float(x) for x in rows[12]] == [12.8, 3.6]
    assert "llama-server-moe.sh" not in serving.TARGETS["llama-cpp"].files(artifact("gguf"))  # dense: no such script


def test_llama_server_knows_the_expert_offload_options(tmp_path):
    from pipeline.tools import llamacpp_toolchain

    chain = llamacpp_toolchain.find()
    if chain is None:
        pytest.skip("llama.cpp toolchain not built (python -m pipeline setup llama-cpp)")
    serving.write(artifact("gguf", experts=EXPERTS), tmp_path)
    flags = long_flags(check_serving(tmp_path / "serving")["llama-server-moe.sh"])
    assert "n-cpu-moe" in flags and set(flags) <= tool_flags([str(chain.tool("llama-server"))]), flags
    assert {"cpu-moe", "override-tensor"} <= tool_flags([str(chain.tool("llama-server"))])  # what the card names


@pytest.mark.parametrize("tp, moe, expert_parallel", [(1, True, False), (4, True, True), (4, False, False)])
def test_vllm_turns_on_expert_parallel_for_moe_across_gpus(tmp_path, tp, moe, expert_parallel):
    import yaml

    spec = ServingSpec(tensor_parallel_size=tp).model_dump(mode="json")
    a = artifact("compressed-tensors", options=spec, experts=EXPERTS if moe else None)
    serving.write(a, tmp_path)
    parsed = check_serving(tmp_path / "serving")
    assert parsed["vllm.yaml"].get("enable-expert-parallel", False) is expert_parallel
    assert "enable-expert-parallel" not in parsed["vllm-cpu.yaml"]  # one CPU: nothing to spread experts over
    k8s = yaml.safe_dump(next(v for k, v in parsed.items() if k.startswith("k8s-")))
    assert ("enable-expert-parallel" in k8s) is expert_parallel


def test_a_checkpoint_with_fp8_kv_scales_is_served_with_an_fp8_kv_cache(tmp_path):
    """vLLM loads the checkpoint's k_scale/v_scale but keeps a bf16 cache unless told kv-cache-dtype fp8."""
    serving.write(artifact("compressed-tensors", kv_cache_dtype="fp8"), tmp_path / "kv")
    serving.write(artifact("compressed-tensors"), tmp_path / "plain")
    kv, plain = check_serving(tmp_path / "kv" / "serving"), check_serving(tmp_path / "plain" / "serving")
    assert kv["vllm.yaml"]["kv-cache-dtype"] == kv["vllm-cpu.yaml"]["kv-cache-dtype"] == "fp8"
    assert "kv-cache-dtype" not in plain["vllm.yaml"]
