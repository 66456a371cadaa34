#!/usr/bin/env bash
# Train with `nmt fit` wherever this runs: a plain machine (CPU or GPUs), inside a torchrun worker, or
# inside a SLURM allocation. Usage: scripts/train.sh CONFIG [overrides...]
#   scripts/train.sh configs/multi30k_en_fr_cho.yaml --trainer.max_epochs 5
# Environment overrides:
#   NMT_DEVICES    devices per node (default: all visible GPUs, else 1 CPU process)
#   NMT_NUM_NODES  number of nodes (default: SLURM_NNODES or 1)
#   NMT_STRATEGY   Lightning strategy (default: ddp when more than one process, else auto)
#   NMT_PYTHON     the Python interpreter to use (default: python)
#   NMT_NO_SRUN    set to run in place inside a SLURM allocation instead of launching tasks through srun
set -euo pipefail

if [[ $# -lt 1 || "$1" == -h || "$1" == --help ]]; then
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
    exit $(( $# < 1 ? 2 : 0 ))
fi
config=$1; shift
if [[ ! -f "$config" ]]; then
    echo "train.sh: config not found: $config" >&2
    exit 2
fi
python=${NMT_PYTHON:-python}

count_gpus() {
    "$python" -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null || echo 0
}

launcher=()
extra=()
if [[ -n "${SLURM_JOB_ID:-}" && -z "${SLURM_STEP_ID:-}" && -z "${NMT_NO_SRUN:-}" ]]; then
    # Inside an allocation (sbatch/salloc) but not yet in a job step: one task per device on every node.
    nodes=${NMT_NUM_NODES:-${SLURM_NNODES:-1}}
    devices=${NMT_DEVICES:-${SLURM_NTASKS_PER_NODE:-${SLURM_GPUS_ON_NODE:-1}}}
    echo "train.sh: SLURM job ${SLURM_JOB_ID}: ${nodes} node(s) x ${devices} task(s) through srun" >&2
    launcher=(srun --kill-on-bad-exit=1)
    extra=(--trainer.num_nodes "$nodes" --trainer.devices "$devices")
    [[ "$nodes" -gt 1 || "$devices" -gt 1 ]] && extra+=(--trainer.strategy "${NMT_STRATEGY:-ddp}")
elif [[ -n "${SLURM_STEP_ID:-}" && -n "${SLURM_PROCID:-}" ]]; then
    echo "train.sh: SLURM task ${SLURM_PROCID}/${SLURM_NTASKS:-1}; Lightning reads the SLURM environment" >&2
    nodes=${NMT_NUM_NODES:-${SLURM_NNODES:-1}}
    devices=${NMT_DEVICES:-${SLURM_NTASKS_PER_NODE:-1}}
    extra=(--trainer.num_nodes "$nodes" --trainer.devices "$devices")
    [[ "${SLURM_NTASKS:-1}" -gt 1 ]] && extra+=(--trainer.strategy "${NMT_STRATEGY:-ddp}")
elif [[ -n "${TORCHELASTIC_RUN_ID:-}" || -n "${LOCAL_WORLD_SIZE:-}" ]]; then
    # Started by torchrun: every worker runs this script; Lightning reads RANK/WORLD_SIZE/MASTER_ADDR.
    nodes=$(( ${WORLD_SIZE:-1} / ${LOCAL_WORLD_SIZE:-1} ))
    echo "train.sh: torchrun worker ${RANK:-0}/${WORLD_SIZE:-1} (${nodes} node(s) x ${LOCAL_WORLD_SIZE:-1})" >&2
    extra=(--trainer.num_nodes "$nodes" --trainer.devices "${LOCAL_WORLD_SIZE:-1}")
    [[ "${WORLD_SIZE:-1}" -gt 1 ]] && extra+=(--trainer.strategy "${NMT_STRATEGY:-ddp}")
else
    gpus=$(count_gpus)
    devices=${NMT_DEVICES:-$(( gpus > 0 ? gpus : 1 ))}
    if [[ "$gpus" -gt 0 ]]; then
        echo "train.sh: this machine, ${devices} of ${gpus} GPU(s)" >&2
        extra=(--trainer.accelerator gpu --trainer.devices "$devices")
    else
        echo "train.sh: this machine, CPU, ${devices} process(es)" >&2
        extra=(--trainer.accelerator cpu --trainer.devices "$devices")
    fi
    [[ "$devices" -gt 1 ]] && extra+=(--trainer.strategy "${NMT_STRATEGY:-ddp}")
fi

set -x
exec "${launcher[@]}" "$python" -m nmt fit --config "$config" "${extra[@]}" "$@"
